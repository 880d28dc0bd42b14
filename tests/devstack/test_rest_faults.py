"""REST fault injection and hostile input on the local stack's /rest/v1."""

from __future__ import annotations

import time
import uuid

import anyio
import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient, acreate_client

pytestmark = pytest.mark.anyio


async def test_rest_answers_503_then_502_then_recovers_when_cleared(devstack, service: AsyncClient, shapes):
    devstack.faults.fail_rest(503, 30)
    with pytest.raises(APIError) as caught:
        await service.rpc("add", {"a": 1}).execute()
    assert (caught.value.code, caught.value.message) == ("503", "Service Unavailable")
    devstack.faults.fail_rest(502, 30)
    with pytest.raises(APIError) as caught:
        await service.table("items").insert({"id": 9, "name": "z"}).execute()
    assert (caught.value.code, caught.value.message) == ("502", "Bad Gateway")
    devstack.faults.clear()
    assert (await service.rpc("add", {"a": 1}).execute()).data == 11


async def test_rest_fault_ends_by_itself_after_its_duration(devstack, service: AsyncClient, shapes):
    devstack.faults.fail_rest(503, 0.3)
    with pytest.raises(APIError):
        await service.rpc("add", {"a": 1}).execute()
    await anyio.sleep(0.4)
    assert (await service.rpc("add", {"a": 1}).execute()).data == 11


async def test_rest_hang_holds_requests_until_the_fault_ends(devstack, shapes):
    devstack.faults.hang_rest(30)
    async with httpx.AsyncClient(
        base_url=devstack.url, headers={"apikey": devstack.keys.service_role}
    ) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/rest/v1/rpc/add", json={"a": 1}, timeout=0.5)
        devstack.faults.hang_rest(0.5)
        started = time.monotonic()
        r = await http.post("/rest/v1/rpc/add", json={"a": 1}, timeout=10)
    assert (r.status_code, r.json()) == (200, 11)
    assert time.monotonic() - started >= 0.3


async def test_fault_admin_endpoint_needs_the_service_key_and_applies_one_fault(devstack):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        admin = {"apikey": devstack.keys.service_role}
        denied = await http.post(
            "/_devstack/faults",
            json={"rest_status": 503, "seconds": 5},
            headers={"apikey": devstack.keys.anon},
        )
        assert denied.status_code == 401
        for bad in ({}, {"rest_status": 418, "seconds": 5}, {"explode": True}, []):
            assert (await http.post("/_devstack/faults", json=bad, headers=admin)).status_code == 400
        assert (
            await http.post("/_devstack/faults", json={"rest_status": 502, "seconds": 30}, headers=admin)
        ).status_code == 200
        assert (
            await http.post("/rest/v1/rpc/reactor_stats", json={"p_table": "jobs"}, headers=admin)
        ).status_code == 502
        assert (
            await http.post("/_devstack/faults", json={"rest_hang": 30}, headers=admin)
        ).status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                "/rest/v1/rpc/reactor_stats", json={"p_table": "jobs"}, headers=admin, timeout=0.5
            )
        assert (await http.post("/_devstack/faults", json={"clear": True}, headers=admin)).status_code == 200
        ok = await http.post("/rest/v1/rpc/reactor_stats", json={"p_table": "jobs"}, headers=admin)
        assert ok.status_code == 200


@pytest.mark.parametrize(
    "query,status",
    [
        ('select=id,"; drop table public.items; --"', 400),
        ("select=id,name)from pg_authid--", 400),
        ("id=eq.1;drop table public.items", 400),
        ('or=(id.eq.1,name.eq.a"))', 400),
        ("or=(id.eq.1)or(1=1", 400),
        ("order=id;drop", 400),
        ("order=id.desc;drop", 400),
        ("limit=1;drop", 400),
        ("offset=-1", 400),
        ("select=*&name=eq.a' or '1'='1", 200),
        # An unclosed quoted element is read unquoted, as PostgREST's pListElement falls back to.
        ('name=in.("z","b\\")', 200),
        ('name=in.("z","b\\"")', 200),
        ("%22id%22%20or%201=eq.1", 400),
        ("select=name->>x');drop table public.items;--", 400),
    ],
)
async def test_injection_shaped_queries_get_clean_answers(devstack, shapes, db, query, status):
    async with httpx.AsyncClient(
        base_url=devstack.url,
        headers={
            "apikey": devstack.keys.service_role,
            "Authorization": f"Bearer {devstack.keys.service_role}",
        },
    ) as http:
        r = await http.get(f"/rest/v1/items?{query}")
    assert r.status_code == status, r.text
    assert set(r.json()) == {"code", "message", "details", "hint"} if status == 400 else r.json() == []
    assert await db.fetchval("select count(*) from public.items") == 3


async def test_injection_shaped_column_names_in_writes_are_refused(service: AsyncClient, shapes, db):
    for row in ({'name" = 1; --': "x"}, {"id) values (99); --": 1}):
        with pytest.raises(APIError) as caught:
            await service.table("items").insert(row).execute()
        assert caught.value.code == "PGRST204"
    with pytest.raises(APIError) as caught:
        await (
            service.table("items").upsert({"id": 1, "name": "q"}, on_conflict="id) do nothing; --").execute()
        )
    assert caught.value.code == "42703"
    assert await db.fetchval("select count(*) from public.items") == 3


async def test_filters_cannot_widen_what_row_level_security_shows(devstack, db: asyncpg.Connection):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await db.execute("insert into public.jobs (job_type, user_id) values ('a', $1), ('b', $2)", alice, bob)
    sb = await acreate_client(devstack.url, devstack.keys.anon)
    sb.postgrest.auth(devstack.keys.user_token(str(alice)))
    jobs = sb.table("jobs")
    assert (await jobs.select("job_type").or_(f"user_id.eq.{bob},id.gt.0").execute()).data == [
        {"job_type": "a"}
    ]
    assert (await jobs.select("job_type").eq("job_type", "b' or '1'='1").execute()).data == []
    with pytest.raises(APIError) as caught:
        await jobs.update({"job_type": "x"}).eq("user_id", str(bob)).execute()
    assert caught.value.code == "42501"
    assert await db.fetchval("select job_type from public.jobs where user_id = $1", bob) == "b"
