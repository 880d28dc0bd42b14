"""Limits that hold across the fleet (sql/migrations/0012): concurrency, rate, per owner and pause
per job type, enforced inside the claim whichever worker calls it."""

import asyncio
import json
import uuid

import asyncpg
import pytest

from tests.support.contract import enqueue, leases, row, rpc, stand_by

pytestmark = pytest.mark.anyio


async def set_limits(db: asyncpg.Connection, job_type: str = "t", **limits) -> dict:
    return await rpc(db, "reactor_set_limits", p_table="jobs", p_job_type=job_type, p_limits=limits)


async def claim(db: asyncpg.Connection, worker: str = "w1", types=("t",), limit: int = 10) -> list:
    answer = await db.fetchval(
        "select public.reactor_claim_jobs('jobs', $1, $2, $3)", worker, list(types), limit
    )
    return json.loads(answer)


async def test_a_concurrency_limit_holds_for_every_worker_until_a_job_finishes(db):
    await set_limits(db, concurrency=2)
    await enqueue(db, "t", 5)
    first = await claim(db, "w1")
    assert len(first) == 2
    assert await claim(db, "w2") == []
    await rpc(
        db, "reactor_complete", p_table="jobs", p_jobs=leases([await row(db, first[0]["id"])], result=1)
    )
    assert len(await claim(db, "w2")) == 1


async def test_concurrent_claims_from_many_connections_never_pass_the_concurrency(db, database_url):
    await set_limits(db, concurrency=3)
    await enqueue(db, "t", 20)
    connections = [await asyncpg.connect(database_url) for _ in range(6)]
    try:
        answers = await asyncio.gather(
            *(
                c.fetchval("select public.reactor_claim_jobs('jobs', $1, array['t'], 10)", f"w{i}")
                for i, c in enumerate(connections)
            )
        )
    finally:
        for c in connections:
            await c.close()
    assert sum(len(json.loads(a)) for a in answers) == 3


async def test_a_rate_limit_allows_its_starts_in_any_window_and_the_tick_says_when_the_next_may(db):
    await set_limits(db, rate=3, per_seconds=60)
    await enqueue(db, "t", 10)
    assert len(await claim(db, "w1")) == 3
    assert await claim(db, "w2") == []
    tick = json.loads(await db.fetchval("select public.reactor_tick('jobs', 'w2', array['t'], 0)"))
    assert 55 < tick["next_due_seconds"] <= 60
    # The window moves on: the three starts are now more than a minute old.
    await db.execute(
        "update reactor.job_limits set starts = array(select s - interval '61 s' from unnest(starts) s)"
    )
    assert len(await claim(db, "w2")) == 3


async def test_a_spent_rate_with_nothing_due_gives_the_tick_no_time(db):
    await set_limits(db, rate=3, per_seconds=60)
    await enqueue(db, "t", 3)
    assert len(await claim(db, "w1")) == 3  # the window is spent, and nothing else is pending
    tick = json.loads(await db.fetchval("select public.reactor_tick('jobs', 'w2', array['t'], 0)"))
    assert tick["next_due_seconds"] is None


async def test_per_owner_limits_interleave_a_burst_from_one_owner_with_everyone_else(db):
    await set_limits(db, per_user=2)
    burst, trickle = uuid.uuid4(), uuid.uuid4()
    early = await enqueue(
        db, "t", 5, user_id=burst
    )  # inserted first: a plain queue would serve them all first
    late = await enqueue(db, "t", 2, user_id=trickle)
    claimed = {job["id"] for job in await claim(db, "w1", limit=3)}
    assert claimed == {early[0], late[0], early[1]}  # turns by owner: each owner's first, then second
    assert [job["id"] for job in await claim(db, "w2")] == [late[1]]  # the burst's owner has 2 running


async def test_a_paused_type_is_neither_claimed_nor_handed_off_nor_announced_until_resumed(db):
    await stand_by(db, "w1", 16)
    await set_limits(db, paused=True)
    [job_id] = await enqueue(db, "t")
    assert ((await row(db, job_id))["status"], (await row(db, job_id))["locked_by"]) == ("pending", None)
    assert await claim(db, "w1") == []
    assert await set_limits(db, paused=False) == {}  # nothing left to limit: the row is gone
    assert [job["id"] for job in await claim(db, "w1")] == [job_id]


async def test_clearing_a_types_last_limit_deletes_its_row_and_no_other(db):
    await set_limits(db, "a", concurrency=1)
    await set_limits(db, "b", concurrency=2)
    assert await set_limits(db, "a", concurrency=None) == {}
    assert await rpc(db, "reactor_limits", p_table="jobs") == {"b": {"concurrency": 2, "paused": False}}


async def test_a_limited_type_is_announced_to_a_herald_but_never_handed_off(db):
    await stand_by(db, "w1", 16)
    await set_limits(db, concurrency=5)
    [job_id] = await enqueue(db, "t")
    assert ((await row(db, job_id))["status"], (await row(db, job_id))["locked_by"]) == ("pending", "w1")


async def test_one_claim_serves_limited_and_unlimited_types_together(db):
    await set_limits(db, concurrency=1)
    await enqueue(db, "t", 3)
    await enqueue(db, "u", 3)
    claimed = await claim(db, "w1", types=("t", "u"))
    assert sorted(job["job_type"] for job in claimed) == ["t", "u", "u", "u"]


async def test_a_declaration_sets_limits_only_where_none_are_set(db):
    await set_limits(db, "t", concurrency=7)
    stored = await rpc(
        db,
        "reactor_declare_limits",
        p_table="jobs",
        p_limits={"t": {"concurrency": 1}, "u": {"rate": 2, "per_seconds": 1}},
    )
    assert stored == {
        "t": {"concurrency": 7, "paused": False},
        "u": {"rate": 2, "per_seconds": 1, "paused": False},
    }


@pytest.mark.parametrize(
    "limits,message",
    [
        ({"burst": 3}, "unknown limit burst"),
        ({"concurrency": -1}, "p_limits"),
        ({"rate": 2}, "p_limits"),  # a rate needs its period
        ({"rate": "two", "per_seconds": 1}, "p_limits"),
        ({"per_user": 0}, "p_limits"),
    ],
)
async def test_bad_limits_are_refused_with_the_reason(db, limits, message):
    with pytest.raises(asyncpg.RaiseError, match=message):
        await set_limits(db, **limits)
    assert await rpc(db, "reactor_limits", p_table="jobs") == {}
