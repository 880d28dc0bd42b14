"""Who may do what through the local stack's /rest/v1: tokens, API keys, grants and row-level
security, all enforced by Postgres itself, and refusals in PostgREST's words."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import jwt
import pytest
from postgrest.exceptions import APIError
from supabase import acreate_client

pytestmark = pytest.mark.anyio


async def user_client(devstack, user_id: str):
    sb = await acreate_client(devstack.url, devstack.keys.anon)
    sb.postgrest.auth(devstack.keys.user_token(user_id))
    return sb


async def test_users_insert_and_see_only_their_own_jobs(devstack, db: asyncpg.Connection):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await db.execute("insert into public.jobs (job_type, user_id) values ('t', $1)", uuid.UUID(bob))
    await db.execute("select reactor.allow_insert('jobs', 'send')")
    sb = await user_client(devstack, alice)
    insert = sb.table("jobs").insert({"job_type": "send", "payload": {"to": "a"}})
    mine = (await insert.select("id,user_id,status,payload").execute()).data[0]
    assert (mine["user_id"], mine["status"], mine["payload"]) == (alice, "pending", {"to": "a"})
    assert [r["id"] for r in (await sb.table("jobs").select("id").execute()).data] == [mine["id"]]
    assert (await sb.table("jobs").select("id").eq("user_id", bob).execute()).data == []


async def test_user_writing_a_row_for_someone_else_is_403(devstack):
    sb = await user_client(devstack, str(uuid.uuid4()))
    with pytest.raises(APIError) as caught:
        await sb.table("jobs").insert({"job_type": "t", "user_id": str(uuid.uuid4())}).execute()
    assert caught.value.code == "42501"


async def test_anon_sees_nothing_and_cannot_insert(devstack, db: asyncpg.Connection):
    await db.execute("insert into public.jobs (job_type) values ('t')")
    async with httpx.AsyncClient(
        base_url=devstack.url,
        headers={"apikey": devstack.keys.anon, "Authorization": f"Bearer {devstack.keys.anon}"},
    ) as http:
        read = await http.get("/rest/v1/jobs?select=*")
        write = await http.post("/rest/v1/jobs", json={"job_type": "t"})
    assert [(r.status_code, r.json()["code"]) for r in (read, write)] == [(401, "42501"), (401, "42501")]
    assert read.headers["WWW-Authenticate"] == "Bearer"
    assert await db.fetchval("select count(*) from public.jobs") == 1


async def test_permission_errors_are_401_for_anon_and_403_for_a_user(devstack):
    statuses = {}
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        for who, token in {
            "anon": devstack.keys.anon,
            "user": devstack.keys.user_token(str(uuid.uuid4())),
        }.items():
            r = await http.post(
                "/rest/v1/rpc/reactor_stats",
                json={"p_table": "jobs"},
                headers={"apikey": devstack.keys.anon, "Authorization": f"Bearer {token}"},
            )
            statuses[who] = (r.status_code, r.json()["code"])
    assert statuses == {"anon": (401, "42501"), "user": (403, "42501")}


async def test_opaque_keys_map_like_the_gateway(devstack):
    secret = await acreate_client(devstack.url, devstack.keys.secret)
    assert (await secret.rpc("reactor_stats", {"p_table": "jobs"}).execute()).data["table"] == "jobs"
    publishable = await acreate_client(devstack.url, devstack.keys.publishable)
    with pytest.raises(APIError) as caught:
        await publishable.rpc("reactor_stats", {"p_table": "jobs"}).execute()
    assert caught.value.code == "42501"


async def test_unknown_opaque_key_is_refused(devstack):
    sb = await acreate_client(devstack.url, "sb_secret_not_this_stacks")
    with pytest.raises(APIError) as caught:
        await sb.table("jobs").select("*").execute()
    assert caught.value.code == "PGRST301"


def forged(keys, kind: str) -> str:
    return {
        "expired": keys.user_token("u", expires_in=-10),
        "wrong_secret": jwt.encode({"role": "service_role", "exp": 4102444800}, "x" * 40, algorithm="HS256"),
        "no_role": keys.sign({"exp": 4102444800}),
        "no_exp": keys.sign({"role": "service_role"}),
        "three_dots": "not.a.jwt",
        "garbage": "garbage",
    }[kind]


@pytest.mark.parametrize(
    "kind,code,message",
    [
        ("expired", "PGRST303", "JWT expired"),
        ("wrong_secret", "PGRST301", "Failed to validate JWT signature"),
        ("no_role", "PGRST301", "Fields `role` and `exp` are required in JWT"),
        ("no_exp", "PGRST301", "Fields `role` and `exp` are required in JWT"),
        ("three_dots", "PGRST301", "The token provided is not a valid JWT"),
        ("garbage", "PGRST301", "The token provided is not a valid JWT"),
    ],
)
async def test_bad_tokens_are_refused_with_401(devstack, kind, code, message):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.get(
            "/rest/v1/jobs",
            headers={"apikey": devstack.keys.anon, "Authorization": f"Bearer {forged(devstack.keys, kind)}"},
        )
    assert (r.status_code, r.json()["code"], r.json()["message"]) == (401, code, message)
    assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_only_the_public_schema_is_exposed(devstack):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.get(
            "/rest/v1/job_tables", headers={"apikey": devstack.keys.service_role, "Accept-Profile": "reactor"}
        )
    assert (r.status_code, r.json()) == (
        406,
        {
            "code": "PGRST106",
            "message": "Invalid schema: reactor",
            "details": None,
            "hint": "Only the following schemas are exposed: public",
        },
    )
