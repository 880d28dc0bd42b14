"""RPC through the local stack's /rest/v1 with the unmodified supabase-py client: every return
shape, GET and POST, and PostgREST's answers for what goes wrong."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient

pytestmark = pytest.mark.anyio


async def test_rpc_returns_every_shape(service: AsyncClient, shapes):
    assert (await service.rpc("add", {"a": 1, "b": 2}).execute()).data == 3
    assert (await service.rpc("add", {"a": 1}).execute()).data == 11
    assert (await service.rpc("hello", {"name": "you"}).execute()).data == "Hello you"
    assert (await service.rpc("doc", {"k": "z"}).execute()).data == {"z": 1}
    assert (await service.rpc("nothing", {}).execute()).data is None
    assert (await service.rpc("first_item", {}).execute()).data == {
        "id": 1,
        "name": "a",
        "tag": "x",
        "note": "fresh",
    }
    assert (await service.rpc("nums", {"n": 3}).execute()).data == [1, 2, 3]
    assert [r["id"] for r in (await service.rpc("all_items", {}).execute()).data] == [1, 2, 3]
    assert (await service.rpc("pairs", {}).execute()).data == [{"k": "a", "v": 1}, {"k": "b", "v": 2}]
    assert (await service.rpc("noop", {}).execute()).data == []
    assert (await service.rpc("tagged", {"tags": ["a", "b"]}).execute()).data == 2
    assert (await service.rpc("echo", {"any": [1, {"x": None}]}).execute()).data == {"any": [1, {"x": None}]}


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
    assert (r.status_code, r.content, r.headers.get("Content-Type")) == (204, b"", None)


async def test_rpc_by_get_takes_arguments_and_filters_from_the_query(service: AsyncClient, shapes):
    assert (await service.rpc("add", {"a": 4, "b": 5}, get=True).execute()).data == 9
    assert (await service.rpc("tagged", {"tags": ["a", "b", "c"]}, get=True).execute()).data == 3
    rows = (await service.rpc("all_items", {}, get=True).gt("id", 1).order("id", desc=True).execute()).data
    assert [r["id"] for r in rows] == [3, 2]


async def test_set_returning_rpc_can_be_filtered_selected_paged_and_counted(service: AsyncClient, shapes):
    rows = (await service.rpc("all_items", {}).gt("id", 1).order("id", desc=True).execute()).data
    assert [r["id"] for r in rows] == [3, 2]
    page = await service.rpc("all_items", {}, count="exact").select("name").order("id").range(0, 1).execute()
    assert (page.data, page.count) == ([{"name": "a"}, {"name": "b"}], 3)
    assert (await service.rpc("all_items", {}).eq("id", 2).single().execute()).data["name"] == "b"
    with pytest.raises(APIError) as caught:
        await service.rpc("all_items", {}).single().execute()
    assert (caught.value.code, caught.value.details) == ("PGRST116", "The result contains 3 rows")


async def test_worker_claims_jobs_with_the_service_role_key(service: AsyncClient, db: asyncpg.Connection):
    await db.execute("insert into public.jobs (job_type, payload) values ('send', '{\"to\": \"a\"}')")
    claimed = (
        await service.rpc(
            "reactor_claim", {"p_table": "jobs", "p_worker": "w1", "p_job_types": ["send"], "p_limit": 5}
        ).execute()
    ).data
    assert [(j["job_type"], j["payload"], j["attempt"]) for j in claimed] == [("send", {"to": "a"}, 1)]
    again = await service.rpc(
        "reactor_claim", {"p_table": "jobs", "p_worker": "w1", "p_job_types": ["send"]}
    ).execute()
    assert again.data == []


async def test_raise_exception_is_400_with_its_message_detail_and_hint(service: AsyncClient, shapes):
    with pytest.raises(APIError) as caught:
        await service.rpc("refuse", {}).execute()
    assert caught.value.json() == {
        "code": "P0001",
        "message": "I refuse!",
        "details": "Pretty simple",
        "hint": "There is nothing you can do.",
    }


async def test_unknown_function_or_arguments_is_pgrst202_404(devstack, service: AsyncClient, shapes):
    with pytest.raises(APIError) as caught:
        await service.rpc("nofn", {"a": 1}).execute()
    assert (caught.value.code, caught.value.message) == (
        "PGRST202",
        "Could not find the function public.nofn(a) in the schema cache",
    )
    with pytest.raises(APIError) as caught:
        await service.rpc("add", {"b": 1}).execute()
    assert caught.value.code == "PGRST202"
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post("/rest/v1/rpc/nofn", json={}, headers={"apikey": devstack.keys.service_role})
    assert (r.status_code, r.json()["message"]) == (
        404,
        "Could not find the function public.nofn without parameters in the schema cache",
    )


async def test_function_created_after_start_is_found_on_first_call(service: AsyncClient, db, shapes):
    assert (await service.rpc("add", {"a": 1}).execute()).data == 11
    await db.execute("create function public.later() returns int language sql as 'select 7'")
    assert (await service.rpc("later", {}).execute()).data == 7


async def test_rpc_runs_as_the_callers_role_with_its_claims(devstack, shapes):
    user = "2b1c3f8e-52c4-4d0e-9b59-6d1f1bd2b0c1"
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post(
            "/rest/v1/rpc/whoami",
            json={},
            headers={
                "apikey": devstack.keys.anon,
                "Authorization": f"Bearer {devstack.keys.user_token(user)}",
            },
        )
    assert r.json() == {"role": "authenticated", "sub": user, "method": "POST"}


async def test_a_failing_rpc_rolls_back_its_writes_and_its_settings(
    devstack, service: AsyncClient, db: asyncpg.Connection, shapes
):
    await db.execute("""
        create function public.add_then_fail() returns int language plpgsql as $$
        begin
          insert into public.items (id, name) values (99, 'doomed');
          raise exception 'changed my mind';
        end $$;
        grant execute on function public.add_then_fail() to anon""")
    with pytest.raises(APIError, match="changed my mind"):
        await service.rpc("add_then_fail", {}).execute()
    assert await db.fetchval("select count(*) from public.items where id = 99") == 0
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post("/rest/v1/rpc/whoami", json={}, headers={"apikey": devstack.keys.anon})
    assert r.json() == {"role": "anon", "sub": None, "method": "POST"}


async def test_volatile_function_by_get_is_refused_as_read_only(devstack, shapes):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.get("/rest/v1/rpc/bump", headers={"apikey": devstack.keys.service_role})
    assert (r.status_code, r.json()["code"]) == (405, "25006")


async def test_bad_json_body_is_pgrst102(devstack, shapes):
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post(
            "/rest/v1/rpc/add",
            content=b"{not json",
            headers={"apikey": devstack.keys.service_role, "Content-Type": "application/json"},
        )
    assert (r.status_code, r.json()["code"]) == (400, "PGRST102")


async def test_an_rpc_with_a_token_for_an_unknown_role_or_a_nul_in_its_name_is_refused(devstack, db, shapes):
    nobody = devstack.keys.sign({"role": "nobody", "exp": 4102444800})
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        r = await http.post(
            "/rest/v1/rpc/whoami",
            json={},
            headers={"apikey": devstack.keys.anon, "Authorization": f"Bearer {nobody}"},
        )
        assert (r.status_code, r.json()["code"]) == (401, "22023")
        assert 'role "nobody" does not exist' in r.json()["message"]
        r = await http.post(
            "/rest/v1/rpc/add%00", json={"a": 1}, headers={"apikey": devstack.keys.service_role}
        )
        assert (r.status_code, r.json()["code"]) == (404, "PGRST202")  # no such function
    assert (await db.fetchval("select count(*) from public.items")) == 3
