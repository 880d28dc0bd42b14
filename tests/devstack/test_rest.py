"""The local stack's /rest/v1 through the unmodified supabase-py client."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient, acreate_client

pytestmark = pytest.mark.anyio


@pytest.fixture
async def service(devstack) -> AsyncClient:
    return await acreate_client(devstack.url, devstack.keys.service_role)


@pytest.fixture
async def shapes(db: asyncpg.Connection) -> None:
    await db.execute("""
        create table public.items (id int primary key, name text not null unique, tag text);
        insert into public.items values (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', null);
        create function public.add(a int, b int default 10) returns int language sql as 'select a + b';
        create function public.hello(name text) returns text language sql as $$select 'Hello ' || name$$;
        create function public.doc(k text) returns jsonb language sql as $$select jsonb_build_object(k, 1)$$;
        create function public.first_item() returns public.items language sql as 'select * from public.items order by id limit 1';
        create function public.nums(n int) returns setof int language sql as 'select generate_series(1, n)';
        create function public.all_items() returns setof public.items language sql as 'select * from public.items';
        create function public.pairs() returns table (k text, v int) language sql as $$values ('a', 1), ('b', 2)$$;
        create function public.noop() returns void language sql as '';
        create function public.refuse() returns int language plpgsql as $$
          begin raise exception 'I refuse!' using detail = 'Pretty simple', hint = 'There is nothing you can do.'; end $$;
        create function public.tagged(tags text[]) returns int language sql as 'select cardinality(tags)';
    """)


async def test_rpc_returns_every_shape(service: AsyncClient, shapes):
    assert (await service.rpc("add", {"a": 1, "b": 2}).execute()).data == 3
    assert (await service.rpc("add", {"a": 1}).execute()).data == 11
    assert (await service.rpc("hello", {"name": "you"}).execute()).data == "Hello you"
    assert (await service.rpc("doc", {"k": "z"}).execute()).data == {"z": 1}
    assert (await service.rpc("first_item", {}).execute()).data == {"id": 1, "name": "a", "tag": "x"}
    assert (await service.rpc("nums", {"n": 3}).execute()).data == [1, 2, 3]
    assert [r["id"] for r in (await service.rpc("all_items", {}).execute()).data] == [1, 2, 3]
    assert (await service.rpc("pairs", {}).execute()).data == [{"k": "a", "v": 1}, {"k": "b", "v": 2}]
    assert (await service.rpc("noop", {}).execute()).data == []
    assert (await service.rpc("tagged", {"tags": ["a", "b"]}).execute()).data == 2


async def test_rpc_by_get_with_filters_on_a_set(service: AsyncClient, shapes):
    assert (await service.rpc("add", {"a": 4, "b": 5}, get=True).execute()).data == 9
    assert (await service.rpc("tagged", {"tags": ["a", "b", "c"]}, get=True).execute()).data == 3
    rows = (await service.rpc("all_items", {}).gt("id", 1).order("id", desc=True).execute()).data
    assert [r["id"] for r in rows] == [3, 2]


async def test_void_rpc_answers_204_without_a_body(devstack, shapes):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post(
            "/rest/v1/rpc/noop",
            json={},
            headers={
                "apikey": devstack.keys.service_role,
                "Authorization": f"Bearer {devstack.keys.service_role}",
            },
        )
    assert (r.status_code, r.content) == (204, b"")


@pytest.mark.parametrize(
    "call,code,status",
    [
        (lambda s: s.rpc("refuse", {}), "P0001", 400),
        (lambda s: s.rpc("nofn", {"a": 1}), "PGRST202", 404),
        (lambda s: s.table("items").insert({"id": 1, "name": "dup"}), "23505", 409),
        (lambda s: s.table("items").select("*").eq("id", 99).single(), "PGRST116", 406),
        (lambda s: s.table("nope").select("*"), "PGRST205", 404),
        (lambda s: s.table("items").insert({"nope": 1}), "PGRST204", 400),
        (lambda s: s.table("items").select("*").eq("id", "not-a-number"), "22P02", 400),
        (lambda s: s.table("items").select("*").eq("no_such_column", 1), "42703", 400),
    ],
)
async def test_errors_carry_postgrest_codes(service: AsyncClient, shapes, call, code, status):
    with pytest.raises(APIError) as caught:
        await call(service).execute()
    assert caught.value.code == code
    if code == "P0001":
        assert (caught.value.message, caught.value.details, caught.value.hint) == (
            "I refuse!",
            "Pretty simple",
            "There is nothing you can do.",
        )


async def test_permission_errors_are_401_for_anon_and_403_for_a_user(devstack):
    headers_for = {
        "anon": devstack.keys.anon,
        "user": devstack.keys.user_token(str(uuid.uuid4())),
    }
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        statuses = {}
        for who, token in headers_for.items():
            r = await http.post(
                "/rest/v1/rpc/reactor_stats",
                json={"p_table": "jobs"},
                headers={"apikey": devstack.keys.anon, "Authorization": f"Bearer {token}"},
            )
            statuses[who] = (r.status_code, r.json()["code"])
    assert statuses == {"anon": (401, "42501"), "user": (403, "42501")}


async def test_select_filters_order_paging_and_count(service: AsyncClient, shapes):
    items = service.table("items")
    assert [r["id"] for r in (await items.select("id").neq("name", "b").order("id").execute()).data] == [1, 3]
    assert (await items.select("name").in_("id", [2, 3]).order("id").execute()).data == [
        {"name": "b"},
        {"name": "c"},
    ]
    assert (await items.select("id").is_("tag", "null").execute()).data == [{"id": 3}]
    assert (await items.select("id").like("name", "*b*").execute()).data == [{"id": 2}]
    assert (await items.select("id").or_("id.eq.1,tag.eq.y").order("id").execute()).data == [
        {"id": 1},
        {"id": 2},
    ]
    page = await items.select("*", count="exact").order("id").range(1, 1).execute()
    assert (page.data, page.count) == ([{"id": 2, "name": "b", "tag": "y"}], 3)
    assert (await items.select("*").eq("id", 2).single().execute()).data["name"] == "b"
    assert (await items.select("*").eq("id", 9).maybe_single().execute()) is None


async def test_insert_upsert_update_delete(service: AsyncClient, shapes, db: asyncpg.Connection):
    items = service.table("items")
    assert (await items.insert({"id": 4, "name": "d"}).execute()).data == [
        {"id": 4, "name": "d", "tag": None}
    ]
    assert (
        len((await items.insert([{"id": 5, "name": "e"}, {"id": 6, "name": "f", "tag": "z"}]).execute()).data)
        == 2
    )
    await items.upsert({"id": 4, "name": "d2"}).execute()
    await items.upsert({"id": 5, "name": "ignored"}, ignore_duplicates=True).execute()
    assert (await items.update({"tag": "t"}).eq("id", 4).execute()).data[0]["tag"] == "t"
    assert (await items.update({"tag": "t"}).eq("id", 99).execute()).data == []
    assert [r["id"] for r in (await items.delete().gte("id", 5).execute()).data] == [5, 6]
    rows = await db.fetch("select id, name, tag from public.items order by id")
    assert [tuple(r) for r in rows] == [(1, "a", "x"), (2, "b", "y"), (3, "c", None), (4, "d2", "t")]


async def test_users_see_and_insert_only_their_own_jobs(devstack, db: asyncpg.Connection):
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await db.execute("insert into public.jobs (job_type, user_id) values ('t', $1)", uuid.UUID(bob))
    sb = await acreate_client(devstack.url, devstack.keys.anon)
    sb.postgrest.auth(devstack.keys.user_token(alice))
    mine = (await sb.table("jobs").insert({"job_type": "send", "payload": {"to": "a"}}).execute()).data[0]
    assert (mine["user_id"], mine["status"]) == (alice, "pending")
    assert [r["id"] for r in (await sb.table("jobs").select("id").execute()).data] == [mine["id"]]
    with pytest.raises(APIError) as caught:
        await sb.table("jobs").insert({"job_type": "t", "user_id": bob}).execute()
    assert caught.value.code == "42501"
    anon = await acreate_client(devstack.url, devstack.keys.anon)
    with pytest.raises(APIError):
        await anon.table("jobs").select("*").execute()


async def test_opaque_keys_map_like_the_gateway(devstack, shapes):
    secret = await acreate_client(devstack.url, devstack.keys.secret)
    assert (await secret.rpc("reactor_stats", {"p_table": "jobs"}).execute()).data["table"] == "jobs"
    publishable = await acreate_client(devstack.url, devstack.keys.publishable)
    with pytest.raises(APIError) as caught:
        await publishable.rpc("reactor_stats", {"p_table": "jobs"}).execute()
    assert caught.value.code == "42501"


@pytest.mark.parametrize(
    "token,code",
    [
        ("not.a.jwt", "PGRST301"),
        ("garbage", "PGRST301"),
        ("expired", "PGRST303"),
        ("wrong", "PGRST301"),
        ("norole", "PGRST301"),
    ],
)
async def test_bad_tokens_are_refused_with_401(devstack, token, code):
    import jwt as pyjwt

    forged = {
        "expired": devstack.keys.user_token("u", expires_in=-10),
        "wrong": pyjwt.encode({"role": "service_role", "exp": 4102444800}, "x" * 40, algorithm="HS256"),
        "norole": devstack.keys.sign({"exp": 4102444800}),
    }.get(token, token)
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.get(
            "/rest/v1/jobs", headers={"apikey": devstack.keys.anon, "Authorization": f"Bearer {forged}"}
        )
    assert (r.status_code, r.json()["code"]) == (401, code)
    assert "Bearer" in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "query",
    [
        'select=id,"; drop table public.items; --"',
        "id=eq.1;drop table public.items",
        'or=(id.eq.1,name.eq.a"))',
        "order=id;drop",
        "limit=1;drop",
        'name=in.("a","b\\")',
    ],
)
async def test_injection_shaped_queries_get_clean_errors(devstack, shapes, db, query):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.get(
            f"/rest/v1/items?{query}",
            headers={
                "apikey": devstack.keys.service_role,
                "Authorization": f"Bearer {devstack.keys.service_role}",
            },
        )
    assert r.status_code in (200, 400), r.text
    assert await db.fetchval("select count(*) from public.items") == 3


async def test_rest_faults_answer_503_502_or_hang_then_recover(devstack, service: AsyncClient, shapes):
    devstack.faults.fail_rest(503, 30)
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post("/rest/v1/rpc/add", json={"a": 1})
        assert r.status_code == 503
        devstack.faults.fail_rest(502, 30)
        assert (await http.post("/rest/v1/rpc/add", json={"a": 1})).status_code == 502
        devstack.faults.hang_rest(30)
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/rest/v1/rpc/add", json={"a": 1}, timeout=0.5)
    devstack.faults.clear()
    assert (await service.rpc("add", {"a": 1}).execute()).data == 11


async def test_only_the_public_schema_is_exposed(devstack):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.get(
            "/rest/v1/job_tables", headers={"apikey": devstack.keys.service_role, "Accept-Profile": "reactor"}
        )
    assert (r.status_code, r.json()["code"]) == (406, "PGRST106")


async def test_fault_admin_endpoint_needs_the_service_key_and_applies_one_fault(devstack):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        admin = {"apikey": devstack.keys.service_role}
        denied = await http.post("/_devstack/faults", json={"rest_status": 503, "seconds": 5},
                                 headers={"apikey": devstack.keys.anon})
        assert denied.status_code == 401
        for bad in ({}, {"rest_status": 418, "seconds": 5}, {"explode": True}, []):
            assert (await http.post("/_devstack/faults", json=bad, headers=admin)).status_code == 400
        assert (await http.post("/_devstack/faults", json={"rest_status": 503, "seconds": 30},
                                headers=admin)).status_code == 200
        assert (await http.post("/rest/v1/rpc/reactor_stats", json={"p_table": "jobs"},
                                headers=admin)).status_code == 503
        assert (await http.post("/_devstack/faults", json={"clear": True}, headers=admin)).status_code == 200
        ok = await http.post("/rest/v1/rpc/reactor_stats", json={"p_table": "jobs"}, headers=admin)
        assert ok.status_code == 200
