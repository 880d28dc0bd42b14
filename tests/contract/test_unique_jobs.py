"""Unique jobs (sql/migrations/0014): while a job of a type, owner and `unique_key` is pending or
running, another insert of it is refused with 23505 and the existing job's id in the details."""

import asyncio
import json
import uuid

import asyncpg
import pytest

from tests.support.contract import acting_as, claim, leases, rpc

pytestmark = pytest.mark.anyio

ALICE, BOB = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture(autouse=True)
async def allowed(db: asyncpg.Connection) -> None:
    await db.execute("select reactor.allow_insert('jobs', 'report')")


async def insert(db: asyncpg.Connection, user: str = ALICE, key: str | None = "march") -> int:
    async with acting_as(db, "authenticated", user):
        return await db.fetchval(
            "insert into public.jobs (job_type, unique_key) values ('report', $1) returning id", key
        )


async def test_a_duplicate_is_refused_with_the_existing_jobs_id_until_that_job_has_finished(db):
    first = await insert(db)
    with pytest.raises(asyncpg.UniqueViolationError) as caught:
        await insert(db)
    assert json.loads(caught.value.detail) == {"id": first}
    assert "already pending or running" in caught.value.message
    [job] = await claim(db, ["report"])
    with pytest.raises(asyncpg.UniqueViolationError):
        await insert(db)  # running counts as well
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job], result=1))
    assert await insert(db) != first  # finished: the key is free again


async def test_keys_are_per_owner_and_per_type_and_no_key_means_no_check(db):
    await insert(db, ALICE)
    await insert(db, BOB)  # the same key, another owner: no one can block another's jobs
    await insert(db, ALICE, key=None)
    await insert(db, ALICE, key=None)
    async with acting_as(db, "service_role"):
        await db.execute("insert into public.jobs (job_type, unique_key) values ('other', 'march')")
    assert await db.fetchval("select count(*) from public.jobs") == 5


async def test_two_inserts_of_one_key_at_once_make_one_job(db, database_url):
    connections = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        outcomes = await asyncio.gather(*(insert(c) for c in connections), return_exceptions=True)
    finally:
        for c in connections:
            await c.close()
    made = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, asyncpg.UniqueViolationError)]
    assert len(made) == 1 and len(refused) == 3
    assert {json.loads(r.detail)["id"] for r in refused} == set(made)


async def test_owners_read_their_keys_and_a_key_is_at_most_200_characters(db):
    await insert(db)
    async with acting_as(db, "authenticated", ALICE):
        assert await db.fetchval("select unique_key from public.jobs") == "march"
    with pytest.raises(asyncpg.CheckViolationError):
        await insert(db, key="k" * 201)


async def test_a_types_window_keeps_a_key_taken_after_its_job_finished_until_the_window_ends(db):
    assert await db.fetchval("select reactor.set_unique_window('jobs', 'report', 3600)") == 3600
    first = await insert(db)
    [job] = await claim(db, ["report"])
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job], result=1))
    with pytest.raises(asyncpg.UniqueViolationError) as caught:
        await insert(db)  # finished, but inserted less than an hour ago
    assert json.loads(caught.value.detail) == {"id": first}
    assert "or was inserted in the last 3600 s" in caught.value.message
    await insert(db, BOB)  # keys stay per owner
    await db.execute("update public.jobs set created_at = now() - interval '61 minutes' where id = $1", first)
    second = await insert(db)  # the window is over
    assert second != first
    assert await db.fetchval("select reactor.set_unique_window('jobs', 'report', null)") is None
    running = await claim(db, ["report"], limit=5)
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases(running, result=1))
    assert await insert(db) not in (first, second)  # no window: free once finished


@pytest.mark.parametrize(
    "call, problem",
    [
        ("select reactor.set_unique_window('jobs', 'report', 0)", "p_seconds must be between 1 and 31536000"),
        ("select reactor.set_unique_window('nope', 'report', 60)", 'unknown job table "nope"'),
    ],
)
async def test_a_bad_window_is_refused_with_what_is_wrong(db, call, problem):
    with pytest.raises(asyncpg.PostgresError, match=problem):
        await db.execute(call)
