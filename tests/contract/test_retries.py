import datetime as dt

import asyncpg
import pytest

from tests.support.contract import claim, enqueue, leases, row, rpc

pytestmark = pytest.mark.anyio


async def test_backoff_is_full_jitter_under_an_exponential_ceiling(db: asyncpg.Connection):
    rows = await db.fetch(
        "select n, extract(epoch from reactor.backoff(n)) s from generate_series(1, 14) n, "
        "generate_series(1, 300)"
    )
    for n in range(1, 15):
        ceiling = min(3600, 2 * 2 ** (n - 1))
        samples = [float(r["s"]) for r in rows if r["n"] == n]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling and min(samples) < 0.2 * ceiling


async def test_failed_attempt_is_retried_after_backoff(db: asyncpg.Connection):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    report = await rpc(db, "reactor_fail", p_table="jobs", p_jobs=leases([job], error="boom"))
    assert report == {"retried": [job["id"]], "failed": [], "stale": []}
    stored = await row(db, job["id"])
    assert (stored["status"], stored["attempts"], stored["last_error"]) == ("pending", 1, "boom")
    assert 0 <= (stored["run_at"] - stored["updated_at"]).total_seconds() <= 2


async def test_failed_attempt_is_retried_at_the_time_asked(db: asyncpg.Connection):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    await rpc(
        db, "reactor_fail", p_table="jobs", p_jobs=leases([job], error="later", retry_at=at.isoformat())
    )
    assert (await row(db, job["id"]))["run_at"] == at


async def test_permanent_failure_dead_letters_at_once(db: asyncpg.Connection):
    await enqueue(db, "t", max_attempts=5)
    [job] = await claim(db, ["t"])
    report = await rpc(
        db, "reactor_fail", p_table="jobs", p_jobs=leases([job], error="bad payload", permanent=True)
    )
    assert report == {"retried": [], "failed": [job["id"]], "stale": []}
    stored = await row(db, job["id"])
    assert (stored["status"], stored["last_error"]) == ("failed", "bad payload")


async def test_last_attempt_failing_dead_letters_even_with_a_retry_time(db: asyncpg.Connection):
    await enqueue(db, "t", max_attempts=1)
    [job] = await claim(db, ["t"])
    report = await rpc(
        db, "reactor_fail", p_table="jobs", p_jobs=leases([job], error="e", retry_at="2030-01-01T00:00:00Z")
    )
    assert report["failed"] == [job["id"]]


async def test_retry_failed_puts_dead_letters_back_with_fresh_attempts(db: asyncpg.Connection):
    a = await enqueue(db, "a", 2, max_attempts=1)
    b = await enqueue(db, "b", 1, max_attempts=1)
    jobs = await claim(db, ["a", "b"], limit=3)
    await rpc(db, "reactor_fail", p_table="jobs", p_jobs=leases(jobs, error="e"))
    assert await rpc(db, "reactor_retry", p_table="jobs", p_ids=[a[0]]) == {"retried": [a[0]]}
    assert await rpc(db, "reactor_retry", p_table="jobs", p_job_type="b") == {"retried": b}
    assert await rpc(db, "reactor_retry", p_table="jobs") == {"retried": [a[1]]}
    stored = await row(db, a[0])
    assert (stored["status"], stored["attempts"], stored["completed_at"]) == ("pending", 0, None)
    assert len(await claim(db, ["a", "b"], limit=10)) == 3


async def test_cancel_stops_pending_and_running_jobs_and_signals_the_running_ones_worker(
    db: asyncpg.Connection,
):
    pending, running, done = await enqueue(db, "t", 3)
    await db.execute("update public.jobs set priority = 1 where id = $1", running)
    await db.execute("update public.jobs set status = 'completed' where id = $1", done)
    [claimed] = await claim(db, ["t"], worker="w7")
    report = await rpc(db, "reactor_cancel", p_table="jobs", p_ids=[pending, running, done, 999])
    assert report == {"cancelled": [pending, running], "not_cancelled": [done, 999]}
    for job_id in (pending, running):
        stored = await row(db, job_id)
        assert (stored["status"], stored["lease_token"]) == ("cancelled", None)
    [signal] = await db.fetch("select * from public.jobs where job_type = 'reactor.probe'")
    assert (signal["status"], signal["locked_by"], signal["payload"]) == (
        "cancelled",
        "w7",
        f'{{"cancel": {running}, "worker": "w7"}}',
    )  # the only row the worker hears: it stops the handler
    late = await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([claimed], result=1))
    assert late == {"completed": [], "stale": [running]}  # the handler's outcome cannot overwrite it
    assert await claim(db, ["t"]) == []


async def test_prune_deletes_only_old_finished_jobs(db: asyncpg.Connection):
    old_done, new_done, waiting = await enqueue(db, "t", 3)
    jobs = await claim(db, ["t"], limit=2)
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases(jobs, result=None))
    await db.execute(
        "update public.jobs set completed_at = now() - interval '2 days' where id = $1", old_done
    )
    assert await rpc(db, "reactor_prune", p_table="jobs", p_older_than_seconds=86400) == {"pruned": 1}
    remaining = [r["id"] for r in await db.fetch("select id from public.jobs order by id")]
    assert remaining == [new_done, waiting]


async def test_snooze_puts_a_job_back_until_its_time_with_its_attempt_unspent(db: asyncpg.Connection):
    [job_id] = await enqueue(db, "t")
    [claimed] = await claim(db, ["t"])
    later = "2030-01-01T00:00:00+00:00"
    stale = {"id": 999, "lease_token": str(claimed["lease_token"]), "error": "waiting"}
    items = [*leases([claimed], retry_at=later, error="waiting for the upload"), stale]
    assert await rpc(db, "reactor_snooze", p_table="jobs", p_jobs=items) == {
        "snoozed": [job_id],
        "stale": [999],
    }
    stored = await row(db, job_id)
    assert (stored["status"], stored["attempts"], stored["lease_token"], stored["last_error"]) == (
        "pending",
        0,
        None,
        None,
    )
    assert stored["run_at"].isoformat() == later
    again = await rpc(db, "reactor_snooze", p_table="jobs", p_jobs=leases([claimed], error="waiting"))
    assert again == {"snoozed": [], "stale": [job_id]}  # the lease is gone: only its holder snoozes
