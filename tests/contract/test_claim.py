import asyncio
import itertools
import json

import asyncpg
import pytest

from tests.support.contract import claim, enqueue, row

pytestmark = pytest.mark.anyio


async def test_eight_concurrent_claimers_drain_ten_thousand_jobs_each_exactly_once(
    database_url: str, db: asyncpg.Connection
):
    due = await db.fetch(
        "insert into public.jobs (job_type, priority, run_at) "
        "select case when i % 2 = 0 then 'a' else 'b' end, i % 3, now() - (i % 7) * interval '1 s' "
        "from generate_series(1, 10000) i returning id"
    )
    future = await enqueue(db, "a", 50)
    await db.execute("update public.jobs set run_at = now() + interval '1 hour' where id = any($1)", future)
    unhandled = await enqueue(db, "other", 50)

    async def claimer(name: str) -> list[int]:
        conn = await asyncpg.connect(database_url)
        got: list[int] = []
        try:
            while batch := await claim(conn, ["a", "b"], limit=50, worker=name):
                got += [j["id"] for j in batch]
        finally:
            await conn.close()
        return got

    results = await asyncio.gather(*(claimer(f"w{i}") for i in range(8)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)) == 10000
    assert set(claimed) == {r["id"] for r in due}
    assert all(len(r) > 0 for r in results), "every claimer got work"
    untouched = await db.fetchval(
        "select count(*) from public.jobs where id = any($1) and status = 'pending' and attempts = 0",
        future + unhandled,
    )
    assert untouched == 100


async def test_claims_come_highest_priority_first_then_oldest_run_at(db: asyncpg.Connection):
    await db.execute(
        "insert into public.jobs (job_type, priority, run_at) "
        "select 't', p, now() - s * interval '1 minute' "
        "from unnest(array[0, 10, 5, 10, 0, 5]) with ordinality as x(p, s)"
    )
    order = []
    while batch := await claim(db, ["t"], limit=2):
        order += [(j["priority"], j["run_at"]) for j in batch]
    assert [p for p, _ in order] == [10, 10, 5, 5, 0, 0]
    for (p1, r1), (p2, r2) in itertools.pairwise(order):
        assert p1 > p2 or r1 <= r2


async def test_scheduled_job_is_claimed_only_once_due(db: asyncpg.Connection):
    [job_id] = await enqueue(db, "t")
    await db.execute("update public.jobs set run_at = now() + interval '1 hour' where id = $1", job_id)
    assert await claim(db, ["t"]) == []
    await db.execute("update public.jobs set run_at = now() - interval '1 ms' where id = $1", job_id)
    assert [j["id"] for j in await claim(db, ["t"])] == [job_id]


async def test_claim_returns_what_a_handler_needs_and_sets_the_lease(db: asyncpg.Connection):
    [job_id] = await enqueue(db, "send_email", payload={"to": "a@b.c"}, priority=3, max_attempts=7)
    [job] = await claim(db, ["send_email"], worker="worker-9", lease=30)
    assert job["id"] == job_id
    assert json.loads(job["payload"]) == {"to": "a@b.c"}
    assert (job["job_type"], job["priority"], job["attempt"], job["max_attempts"]) == ("send_email", 3, 1, 7)
    stored = await row(db, job_id)
    assert stored["status"] == "processing"
    assert stored["attempts"] == 1
    assert stored["locked_by"] == "worker-9"
    assert stored["lease_token"] == job["lease_token"]
    lease = (stored["lease_expires_at"] - stored["started_at"]).total_seconds()
    assert lease == pytest.approx(30, abs=0.01)


async def test_each_claim_issues_a_fresh_lease_token(db: asyncpg.Connection):
    [job_id] = await enqueue(db, "t")
    [first] = await claim(db, ["t"])
    await db.execute("update public.jobs set status = 'pending' where id = $1", job_id)
    [second] = await claim(db, ["t"])
    assert first["lease_token"] != second["lease_token"]
    assert second["attempt"] == 2


async def test_a_claim_commits_without_waiting_for_the_disk_and_nothing_else_does(db: asyncpg.Connection):
    """0005: the claim's transaction commits asynchronously (a lost claim only means a rerun);
    the setting ends with that transaction, so completes and the rest stay synchronous."""
    await enqueue(db, "t")
    assert await db.fetchval("show synchronous_commit") == "on"
    async with db.transaction():
        [job] = await claim(db, ["t"])
        assert await db.fetchval("show synchronous_commit") == "off"
    assert await db.fetchval("show synchronous_commit") == "on"
    async with db.transaction():
        await db.fetchval(
            "select public.reactor_complete('jobs', $1::jsonb)",
            json.dumps([{"id": job["id"], "lease_token": str(job["lease_token"]), "result": None}]),
        )
        assert await db.fetchval("show synchronous_commit") == "on"
    assert (await row(db, job["id"]))["status"] == "completed"


@pytest.mark.parametrize("function", ["reactor_claim_jobs", "reactor_claim_batch"])
async def test_the_batch_claim_returns_the_claim_as_one_array_in_claim_order(
    db: asyncpg.Connection, function
):
    """reactor_claim_jobs (json) is the worker's; reactor_claim_batch (jsonb) stays for workers of
    earlier versions during a rolling upgrade, and both answer alike."""
    low = await enqueue(db, "t", 2)
    high = await enqueue(db, "t", 1, priority=5)
    answer = await claim_batch(db, 3, function)
    assert [job["id"] for job in answer] == [*high, *low]
    assert set(answer[0]) == {
        "id",
        "job_type",
        "payload",
        "priority",
        "attempt",
        "max_attempts",
        "lease_token",
        "run_at",
        "created_at",
        "user_id",
        "resumed",
        "parent_id",
    }
    stored = await db.fetch(
        "select id, lease_token::text from public.jobs where status = 'processing' order by id"
    )
    assert sorted((job["id"], job["lease_token"]) for job in answer) == [tuple(r) for r in stored]
    assert await claim_batch(db, 1, function) == []


async def claim_batch(db: asyncpg.Connection, limit: int, function: str = "reactor_claim_jobs") -> list[dict]:
    answer = await db.fetchval(f"select public.{function}('jobs', 'w1', array['t'], $1)", limit)
    return json.loads(answer)
