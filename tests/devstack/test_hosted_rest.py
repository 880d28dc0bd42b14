"""The hosted profile's /rest/v1 behaves as hosted Supabase's PostgREST: db-max-rows cuts every read,
each role's statement_timeout cancels a long request with PostgREST's 500 and 57014 body, the
schema cache knows only what it read at the last `NOTIFY pgrst`, and every request travels the
round trip. Each test also shows that the local profile does none of it.

docs/hosted-supabase.md gives the sources of each behaviour and number.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient, acreate_client

from reactor.devstack.profile import Profile
from reactor.devstack.rest.catalog import closest
from reactor.devstack.stack import Stack, serve

pytestmark = pytest.mark.anyio

TIMEOUT_BODY = {
    "code": "57014",
    "details": None,
    "hint": None,
    "message": "canceling statement due to statement timeout",
}


@contextlib.asynccontextmanager
async def running(database_url: str, profile: Profile) -> AsyncIterator[tuple[Stack, AsyncClient]]:
    """A stack with `profile` and supabase-py on it with the service_role key, as the worker."""
    async with serve(database_url, port=0, profile=profile) as stack:
        yield stack, await acreate_client(stack.url, stack.keys.service_role)


def hosted(**overrides: Any) -> Profile:
    return Profile.hosted("free", **{"round_trip_ms": 0.0, **overrides})


def service_headers(stack: Stack, **more: str) -> dict[str, str]:
    key = stack.keys.service_role
    return {"apikey": key, "Authorization": f"Bearer {key}", **more}


# -- db-max-rows ----------------------------------------------------------------------------------


@pytest.fixture
async def many(db: asyncpg.Connection) -> None:
    """1500 rows, and functions returning them as rows, as single values, and as one jsonb array."""
    await db.execute("""
        create table public.many (id int primary key, note text);
        insert into public.many (id) select generate_series(1, 1500);
        create function public.many_rows() returns setof public.many language sql stable
          as 'select * from public.many order by id';
        create function public.many_ids() returns setof int language sql stable
          as 'select id from public.many order by id';
        create function public.many_json() returns jsonb language sql stable
          as 'select jsonb_agg(id order by id) from public.many';
    """)


async def read_everything(stack: Stack, sb: AsyncClient) -> dict[str, Any]:
    counted = await sb.table("many").select("id", count="exact").order("id").execute()
    async with httpx.AsyncClient(base_url=stack.url, headers=service_headers(stack)) as http:
        table = await http.get("/rest/v1/many?select=id&order=id", headers={"Prefer": "count=exact"})
        offset = await http.get("/rest/v1/many?select=id&order=id&offset=1400")
        rpc = await http.post("/rest/v1/rpc/many_rows", json={})
    return {
        "table": (len(counted.data), counted.count),
        "table_http": (table.status_code, table.headers["Content-Range"]),
        "offset": (len(offset.json()), offset.headers["Content-Range"]),
        "rpc_http": (rpc.status_code, rpc.headers["Content-Range"], len(rpc.json())),
        "rows": len((await sb.rpc("many_rows", {}).execute()).data),
        "ids": len((await sb.rpc("many_ids", {}).execute()).data),
        "counted_ids": (await sb.rpc("many_ids", {}, count="exact").execute()).count,
        "json": len((await sb.rpc("many_json", {}).execute()).data),
        "asked_fewer": len((await sb.table("many").select("id").range(0, 9).execute()).data),
        "updated": len((await sb.table("many").update({"note": "seen"}).gte("id", 1).execute()).data),
    }


async def test_hosted_max_rows_cuts_every_read_but_not_one_value_or_a_write(database_url, many):
    async with running(database_url, hosted()) as (stack, sb):
        assert stack.profile.max_rows == 1000
        seen = await read_everything(stack, sb)
    assert seen == {
        "table": (1000, 1500),
        "table_http": (206, "0-999/1500"),
        "offset": (100, "1400-1499/*"),
        "rpc_http": (200, "0-999/*", 1000),
        "rows": 1000,  # a set of rows, as reactor_claim returns
        "ids": 1000,  # a set of single values
        "counted_ids": 1500,
        "json": 1500,  # one jsonb value is one row: never cut
        "asked_fewer": 10,
        "updated": 1500,  # rows a write returns are never cut
    }


async def test_local_profile_returns_every_row(database_url, many):
    async with running(database_url, Profile.local()) as (stack, sb):
        seen = await read_everything(stack, sb)
    assert seen == {
        "table": (1500, 1500),
        "table_http": (200, "0-1499/1500"),
        "offset": (100, "1400-1499/*"),
        "rpc_http": (200, "0-1499/*", 1500),
        "rows": 1500,
        "ids": 1500,
        "counted_ids": 1500,
        "json": 1500,
        "asked_fewer": 10,
        "updated": 1500,
    }


async def test_hosted_max_rows_hides_claimed_jobs_past_it(database_url, db: asyncpg.Connection):
    """reactor_claim returns a set: PostgREST cuts it after the function has claimed them all, so
    a worker asking for more than max_rows holds leases on jobs it never sees."""
    await db.execute("insert into public.jobs (job_type) select 'cut' from generate_series(1, 3)")
    args = {"p_table": "jobs", "p_worker": "w1", "p_job_types": ["cut"], "p_limit": 3}
    async with running(database_url, hosted(max_rows=2)) as (_, sb):
        claimed = (await sb.rpc("reactor_claim", args).execute()).data
    processing = "select count(*) from public.jobs where job_type = 'cut' and status = 'processing'"
    assert (len(claimed), await db.fetchval(processing)) == (2, 3)


# -- statement_timeout ----------------------------------------------------------------------------


@pytest.fixture
async def slow(db: asyncpg.Connection) -> None:
    await db.execute("""
        create function public.timeout_now() returns text language sql stable
          as $$select current_setting('statement_timeout')$$;
        create view public.timeouts as select current_setting('statement_timeout') as timeout;
        create function public.nap(s float8) returns int language sql volatile
          as 'select 1 from pg_sleep(s)';
        create function public.long_nap(s float8) returns int language sql volatile
          set statement_timeout = '5s' as 'select 1 from pg_sleep(s)';
        create view public.sleepy as select 1 as one from pg_sleep(1);
    """)


async def timeouts_by_role(stack: Stack) -> dict[str, list[str]]:
    """statement_timeout as a function and a view see it, for each role's token."""
    tokens = {
        "anon": stack.keys.anon,
        "authenticated": stack.keys.user_token(str(uuid.uuid4())),
        "service_role": stack.keys.service_role,
    }
    seen = {}
    async with httpx.AsyncClient(base_url=stack.url) as http:
        for role, token in tokens.items():
            headers = {"apikey": stack.keys.anon, "Authorization": f"Bearer {token}"}
            rpc = await http.post("/rest/v1/rpc/timeout_now", json={}, headers=headers)
            view = await http.get("/rest/v1/timeouts", headers=headers)
            seen[role] = [rpc.json(), view.json()[0]["timeout"]]
    return seen


async def test_hosted_requests_run_under_their_roles_statement_timeout(database_url, slow):
    async with running(database_url, hosted()) as (stack, _):
        assert await timeouts_by_role(stack) == {
            "anon": ["3s", "3s"],
            "authenticated": ["8s", "8s"],
            "service_role": ["8s", "8s"],  # none of its own: the authenticator's
        }
    async with running(database_url, hosted(statement_timeout_ms=200)) as (stack, sb):
        with pytest.raises(APIError) as caught:
            await sb.rpc("nap", {"s": 1}).execute()
        assert caught.value.json() == TIMEOUT_BODY
        async with httpx.AsyncClient(base_url=stack.url, headers=service_headers(stack)) as http:
            rpc = await http.post("/rest/v1/rpc/nap", json={"s": 1})
            view = await http.get("/rest/v1/sleepy")
        assert (rpc.status_code, rpc.json()) == (500, TIMEOUT_BODY)
        assert rpc.headers["Proxy-Status"] == "PostgREST; error=57014"
        assert (view.status_code, view.json()) == (500, TIMEOUT_BODY)
        # A function's own statement_timeout is hoisted into the request's transaction.
        assert (await sb.rpc("long_nap", {"s": 0.5}).execute()).data == 1
        assert (await sb.rpc("timeout_now", {}).execute()).data == "200ms"


async def test_local_profile_has_no_statement_timeout(database_url, slow):
    async with running(database_url, Profile.local()) as (stack, sb):
        assert await timeouts_by_role(stack) == {
            "anon": ["0", "0"],
            "authenticated": ["0", "0"],
            "service_role": ["0", "0"],
        }
        assert (await sb.rpc("nap", {"s": 0.5}).execute()).data == 1


# -- schema cache ---------------------------------------------------------------------------------

LATE = """
    set session_replication_role = replica;  -- as before the NOTIFY of an event trigger arrives
    create function public.late_answer(x int) returns int language sql as 'select x * 2';
    create table public.late_items (id int primary key);
    insert into public.late_items values (1);
    reset session_replication_role;
"""


async def test_hosted_schema_cache_knows_only_its_last_reload(database_url, db: asyncpg.Connection):
    async with running(database_url, hosted()) as (stack, sb):
        assert (await sb.rpc("reactor_stats", {"p_table": "jobs"}).execute()).data is not None
        await db.execute(LATE)
        with pytest.raises(APIError) as caught:
            await sb.rpc("late_answer", {"x": 2}).execute()
        assert caught.value.json() == {
            "code": "PGRST202",
            "details": "Searched for the function public.late_answer with parameter x or with a single "
            "unnamed json/jsonb parameter, but no matches were found in the schema cache.",
            "hint": None,
            "message": "Could not find the function public.late_answer(x) in the schema cache",
        }
        async with httpx.AsyncClient(base_url=stack.url, headers=service_headers(stack)) as http:
            table = await http.get("/rest/v1/late_items")
        assert (table.status_code, table.json()) == (
            404,
            {
                "code": "PGRST205",
                "details": None,
                "hint": None,
                "message": "Could not find the table 'public.late_items' in the schema cache",
            },
        )

        await db.execute("notify pgrst, 'reload schema'")
        assert await eventually(lambda: sb.rpc("late_answer", {"x": 2}).execute()) == 4
        assert (await sb.table("late_items").select("id").execute()).data == [{"id": 1}]

        # Once known, a near miss names it, as PostgREST's fuzzy hints do.
        with pytest.raises(APIError) as caught:
            await sb.rpc("late_answr", {"x": 2}).execute()
        assert caught.value.hint == "Perhaps you meant to call the function public.late_answer"
        with pytest.raises(APIError) as caught:
            await sb.rpc("late_answer", {"x": 2, "z": 1}).execute()
        assert caught.value.hint == "Perhaps you meant to call the function public.late_answer(x)"
        with pytest.raises(APIError) as caught:
            await sb.table("late_item").select("id").execute()
        assert caught.value.hint == "Perhaps you meant the table 'public.late_items'"


async def test_local_profile_finds_what_was_created_after_start(database_url, db: asyncpg.Connection):
    async with running(database_url, Profile.local()) as (_, sb):
        assert (await sb.rpc("reactor_stats", {"p_table": "jobs"}).execute()).data is not None
        await db.execute(LATE)
        assert (await sb.rpc("late_answer", {"x": 2}).execute()).data == 4
        assert (await sb.table("late_items").select("id").execute()).data == [{"id": 1}]


async def eventually(call, seconds: float = 5.0) -> Any:
    """The call's data once it stops failing with PGRST202 (the reload is asynchronous)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return (await call()).data
        except APIError as exc:
            if exc.code != "PGRST202" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def test_hints_pick_what_the_fuzzyset_library_picks():
    # Data.FuzzySet's documented examples (fuzzyset 0.2.4, the version PostgREST builds with).
    assert closest(["Jurassic Park", "Terminator", "The Matrix"], "percolator", 0.33) == "Terminator"
    assert closest(["Shaggy Rogers", "Fred Jones", "Daphne Blake"], "Shaggy Jones", 0.33) == "Shaggy Rogers"
    assert closest(["Kansas", "Pennsylvania", "Virgin Islands"], "Transylvania", 0.75) == "Pennsylvania"
    assert closest(["Kansas", "Pennsylvania", "Virgin Islands"], "Burger Islands", 0.75) is None
    assert closest(["jobs"], "JOBS", 0.75) == "jobs"


# -- distance -------------------------------------------------------------------------------------


async def timed_request(stack: Stack) -> float:
    async with httpx.AsyncClient(base_url=stack.url, headers=service_headers(stack)) as http:
        await http.get("/rest/v1/jobs?select=id&limit=1")  # connection and catalog warm
        started = time.monotonic()
        r = await http.get("/rest/v1/jobs?select=id&limit=1")
        elapsed = time.monotonic() - started
    assert r.status_code == 200
    return elapsed


async def test_hosted_requests_take_the_round_trip_longer(database_url):
    async with running(database_url, hosted(round_trip_ms=300.0)) as (stack, _):
        assert await timed_request(stack) >= 0.3
    async with running(database_url, Profile.local()) as (stack, _):
        assert await timed_request(stack) < 0.3
