import asyncio

import asyncpg
import pytest

from tests.support.contract import claim, enqueue, row, rpc

pytestmark = pytest.mark.anyio


async def expire_leases(db: asyncpg.Connection) -> None:
    await db.execute(
        "update public.jobs set lease_expires_at = now() - interval '1 s' where status = 'processing'"
    )


async def test_expired_lease_goes_back_to_pending_with_the_attempt_counted(db: asyncpg.Connection):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"], worker="crashed-worker")
    await expire_leases(db)
    assert await rpc(db, "reactor_reap", p_table="jobs") == {"requeued": [job["id"]], "failed": []}
    stored = await row(db, job["id"])
    assert stored["status"] == "pending"
    assert stored["attempts"] == 1
    assert stored["lease_token"] is None and stored["locked_by"] is None
    assert "lease expired" in stored["last_error"] and "crashed-worker" in stored["last_error"]
    delay = (stored["run_at"] - stored["updated_at"]).total_seconds()
    assert 0 <= delay <= 2


async def test_live_leases_are_not_reaped(db: asyncpg.Connection):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"], lease=60)
    assert await rpc(db, "reactor_reap", p_table="jobs") == {"requeued": [], "failed": []}
    assert (await row(db, job["id"]))["status"] == "processing"


async def test_a_job_that_kills_every_worker_ends_failed_after_its_attempts(db: asyncpg.Connection):
    [job_id] = await enqueue(db, "t", max_attempts=3)
    for attempt in range(1, 4):
        await db.execute("update public.jobs set run_at = now() where id = $1", job_id)
        [job] = await claim(db, ["t"])
        assert job["attempt"] == attempt
        await expire_leases(db)
        report = await rpc(db, "reactor_reap", p_table="jobs")
    assert report == {"requeued": [], "failed": [job_id]}
    stored = await row(db, job_id)
    assert (stored["status"], stored["attempts"]) == ("failed", 3)
    assert "attempts exhausted" in stored["last_error"]
    assert stored["completed_at"] is not None
    await db.execute("update public.jobs set run_at = now() where id = $1", job_id)
    assert await claim(db, ["t"]) == []


async def test_concurrent_reapers_never_double_count(database_url: str, db: asyncpg.Connection):
    await enqueue(db, "t", 600)
    await claim(db, ["t"], limit=600)
    await expire_leases(db)

    async def reaper() -> dict:
        conn = await asyncpg.connect(database_url)
        try:
            seen: dict[str, list[int]] = {"requeued": [], "failed": []}
            while True:
                report = await rpc(conn, "reactor_reap", p_table="jobs", p_limit=25)
                if not report["requeued"] and not report["failed"]:
                    return seen
                for key in seen:
                    seen[key] += report[key]
        finally:
            await conn.close()

    reports = await asyncio.gather(*(reaper() for _ in range(8)))
    requeued = [i for r in reports for i in r["requeued"]]
    assert len(requeued) == len(set(requeued)) == 600
    counts = await db.fetchrow(
        "select count(*) filter (where status = 'pending') pending, "
        "max(attempts) hi, min(attempts) lo from public.jobs"
    )
    assert tuple(counts) == (600, 1, 1)
