"""What a user sees in the job table when a worker runs their handlers (polling only)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import pytest
from loguru import logger

from reactor import Job, PermanentError, Reactor, RetryLater
from reactor.retry import RetryPolicy
from tests.support.worker import insert, row, running, status_is, wait_until, worker_config

pytestmark = pytest.mark.anyio


async def test_job_completes_with_its_result_and_progress_is_written_through(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    proceed = anyio.Event()

    @app.handler("add")
    async def add(job: Job) -> dict:
        await job.set_progress(50, "halfway")
        await proceed.wait()
        return {"sum": job.payload["a"] + job.payload["b"]}

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "add", {"a": 2, "b": 3})

        async def halfway() -> bool:
            found = await row(db, job_id)
            return found["progress"] == 50 and found["progress_message"] == "halfway"

        await wait_until(halfway)
        proceed.set()
        done = await status_is(db, job_id, "completed")
    assert json.loads(done["result"]) == {"sum": 5}
    assert done["attempts"] == 1 and done["progress"] == 100 and done["lease_token"] is None


async def test_handler_that_raises_is_retried_after_a_jittered_backoff(stack, db: asyncpg.Connection) -> None:
    app = Reactor()

    @app.handler("flaky", retry=RetryPolicy(base_seconds=40, cap_seconds=600))
    async def flaky(job: Job) -> None:
        raise ValueError("downstream said no")

    # The worker's own policy would retry within a millisecond: three draws of the handler's, up to
    # 40 s each, all that short is a chance of one in 64 billion.
    config = worker_config(stack, retry_base_seconds=0.001, retry_cap_seconds=0.001)
    async with running(app, config):
        job_ids = [await insert(db, "flaky") for _ in range(3)]

        async def retried() -> list[asyncpg.Record] | None:
            found = [await row(db, job_id) for job_id in job_ids]
            return found if all(f["status"] == "pending" and f["attempts"] == 1 for f in found) else None

        found = await wait_until(retried)
    assert {f["last_error"] for f in found} == {"ValueError: downstream said no"}
    waits = [(f["run_at"] - f["updated_at"]).total_seconds() for f in found]
    assert all(0 <= wait <= 40 for wait in waits)  # full jitter below the first ceiling, base_seconds
    assert max(waits) > 0.01


async def test_permanent_error_sends_the_job_to_failed_at_once(stack, db: asyncpg.Connection) -> None:
    app = Reactor()

    @app.handler("doomed")
    async def doomed(job: Job) -> None:
        raise PermanentError("the address does not exist")

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "doomed")
        found = await status_is(db, job_id, "failed")
    assert found["attempts"] == 1
    assert found["last_error"] == "PermanentError: the address does not exist"


async def test_handler_past_its_timeout_is_cancelled_and_retried(stack, db: asyncpg.Connection) -> None:
    app = Reactor()
    cancelled = anyio.Event()

    @app.handler("hangs", timeout=0.3)
    async def hangs(job: Job) -> None:
        try:
            await anyio.sleep(60)
        finally:
            cancelled.set()

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "hangs")

        async def retried() -> asyncpg.Record | None:
            found = await row(db, job_id)
            return found if found["status"] == "pending" and found["attempts"] == 1 else None

        found = await wait_until(retried)
    assert cancelled.is_set()
    assert found["last_error"] == "timed out after 0.3 s"


async def test_job_that_always_fails_is_dead_lettered_after_max_attempts(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    attempts: list[int] = []

    @app.handler("broken", max_attempts=3, retry=RetryPolicy(base_seconds=0.05, cap_seconds=0.05))
    async def broken(job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError(f"attempt {job.attempt} failed")

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "broken")
        found = await status_is(db, job_id, "failed")
    assert attempts == [1, 2, 3]
    assert found["attempts"] == 3 and found["last_error"] == "RuntimeError: attempt 3 failed"


async def test_unknown_job_type_is_never_claimed_and_shows_in_statistics(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()

    @app.handler("known")
    async def known(job: Job) -> str:
        return "done"

    async with running(app, worker_config(stack)):
        unknown_id = await insert(db, "mystery")
        known_id = await insert(db, "known")
        await status_is(db, known_id, "completed")
        await anyio.sleep(0.5)  # several sweeps
        stats = await app.worker.store.stats("jobs")
    untouched = await row(db, unknown_id)
    assert (untouched["status"], untouched["attempts"], untouched["locked_by"]) == ("pending", 0, None)
    assert stats["pending_by_type"] == {"mystery": 1}


async def test_result_that_is_not_json_fails_the_job_with_a_clear_error(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()

    @app.handler("sets")
    async def sets(job: Job) -> dict:
        return {"tags": {"a", "b"}}

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "sets")
        found = await status_is(db, job_id, "failed")
    assert found["last_error"].startswith("the handler's result is not JSON: ")
    assert "set" in found["last_error"]


async def test_retry_later_reschedules_the_job_at_the_asked_time(stack, db: asyncpg.Connection) -> None:
    app = Reactor()
    at = datetime(2100, 1, 1, tzinfo=UTC)

    @app.handler("later")
    async def later(job: Job) -> None:
        raise RetryLater(at=at)

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "later")

        async def rescheduled() -> asyncpg.Record | None:
            found = await row(db, job_id)
            return found if found["status"] == "pending" and found["attempts"] == 1 else None

        found = await wait_until(rescheduled)
    assert found["run_at"] == at
    assert found["last_error"].startswith("retry requested at 2100-01-01")


async def test_job_retried_later_starts_on_its_timer_not_on_the_next_sweep(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    started: list[datetime] = []
    requested: list[datetime] = []

    @app.handler("twice")
    async def twice(job: Job) -> str:
        started.append(datetime.now(UTC))
        if job.attempt == 1:
            requested.append(datetime.now(UTC) + timedelta(seconds=1.0))
            raise RetryLater(at=requested[0])
        return "second time"

    # No sweep for two minutes (sweeps also reap and fetch statistics, so those wait too).
    slow = dict.fromkeys(("poll_fast_seconds", "poll_slow_seconds", "reap_seconds", "stats_seconds"), 120.0)
    async with running(app, worker_config(stack, **slow)):
        await anyio.sleep(0.3)  # the start-up sweep is done: only the timer can find the retry
        job_id = await insert(db, "twice")
        app.worker.wakeups.wake("jobs")  # stands in for the Realtime event of the insert
        done = await status_is(db, job_id, "completed")
    assert len(started) == 2 and done["attempts"] == 2
    # On its timer: the next tick is 120 s away; a timer 5 s late is not on time either.
    late = (started[1] - requested[0]).total_seconds()
    assert 0 <= late < 2.0


async def test_lost_lease_cancels_the_running_handler_which_is_never_reported(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    cancelled, stolen = anyio.Event(), anyio.Event()
    progress: list[bool] = []

    @app.handler("long")
    async def long(job: Job) -> str:
        try:
            with anyio.CancelScope(shield=True):  # the test, not a heartbeat, says when to look
                await stolen.wait()
                progress.append(await job.set_progress(60, "after the lease is gone"))
            await anyio.sleep(60)
        finally:
            cancelled.set()
        return "unreachable"

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "long")
        await status_is(db, job_id, "processing")
        new_owner = await db.fetchval(
            "update public.jobs set lease_token = gen_random_uuid(), locked_by = 'other' where id = $1"
            " returning lease_token",
            job_id,
        )
        stolen.set()
        with anyio.fail_after(10):
            await cancelled.wait()
    assert progress == [False]
    reports = {
        f for (f, _) in app.worker.store.calls if f in ("reactor_complete", "reactor_fail", "reactor_release")
    }
    assert reports == set()  # not sent and refused: never sent
    found = await row(db, job_id)
    assert (found["status"], found["lease_token"], found["locked_by"]) == ("processing", new_owner, "other")
    assert found["result"] is None and found["last_error"] is None and found["progress"] is None


async def test_never_runs_more_jobs_than_its_concurrency(stack, db: asyncpg.Connection) -> None:
    app = Reactor()
    now_running, peak = 0, 0

    @app.handler("nap")
    async def nap(job: Job) -> None:
        nonlocal now_running, peak
        now_running += 1
        peak = max(peak, now_running)
        await anyio.sleep(0.1)
        now_running -= 1

    async with running(app, worker_config(stack, concurrency=3)):
        ids = [await insert(db, "nap") for _ in range(12)]
        for job_id in ids:
            await status_is(db, job_id, "completed")
    assert peak == 3


async def test_concurrency_above_the_batch_limit_claims_full_batches_back_to_back(
    stack, db: asyncpg.Connection
) -> None:
    """A claim asks for at most 1,000 jobs; a worker with more free slots must still read a
    full answer as "more are waiting" rather than wait for its next tick (an hour here)."""
    app = Reactor()

    @app.handler("noop")
    async def noop(job: Job) -> None:
        return None

    await db.execute("insert into public.jobs (job_type) select 'noop' from generate_series(1, 2500)")
    slow = {"poll_fast_seconds": 3600, "poll_slow_seconds": 3600, "reap_seconds": 3600, "stats_seconds": 3600}
    async with running(app, worker_config(stack, concurrency=1500, **slow)):

        async def all_done() -> bool:
            return await db.fetchval("select count(*) from public.jobs where status = 'completed'") == 2500

        await wait_until(all_done, timeout=60)
        calls = app.worker.store.calls
    assert calls[("reactor_claim_jobs", "ok")] + calls[("reactor_tick", "ok")] <= 6


async def test_outcomes_of_a_burst_are_recorded_in_batches(stack, db: asyncpg.Connection) -> None:
    app = Reactor()

    @app.handler("noop")
    async def noop(job: Job) -> int:
        return job.id

    await db.execute("insert into public.jobs (job_type) select 'noop' from generate_series(1, 300)")
    async with running(app, worker_config(stack, concurrency=100)):

        async def all_done() -> bool:
            return await db.fetchval("select count(*) from public.jobs where status = 'completed'") == 300

        await wait_until(all_done, timeout=60)
        calls = app.worker.store.calls
    assert calls[("reactor_complete", "ok")] < 300
    assert await db.fetchval("select count(*) from public.jobs where result = to_jsonb(id)") == 300


async def test_shutdown_lets_quick_jobs_finish_and_hands_back_the_rest(stack, db: asyncpg.Connection) -> None:
    app = Reactor()

    @app.handler("quick")
    async def quick(job: Job) -> str:
        await anyio.sleep(0.3)
        return "finished"

    @app.handler("slow")
    async def slow(job: Job) -> str:
        await anyio.sleep(60)
        return "too late"

    async with running(app, worker_config(stack, grace_seconds=1.0)):
        quick_id, slow_id = await insert(db, "quick"), await insert(db, "slow")
        await status_is(db, quick_id, "processing")
        await status_is(db, slow_id, "processing")
        stopping = time.monotonic()
    # The grace, then handing back; 10 times the grace would be 10 s.
    assert time.monotonic() - stopping < 1.0 + 3.0
    assert (await row(db, quick_id))["status"] == "completed"
    released = await row(db, slow_id)
    assert (released["status"], released["attempts"], released["lease_token"]) == ("pending", 0, None)


async def test_heartbeats_keep_a_job_longer_than_its_lease(stack, db: asyncpg.Connection) -> None:
    app = Reactor()

    @app.handler("marathon")
    async def marathon(job: Job) -> str:
        await anyio.sleep(4.5)  # one and a half leases of 3 s, with the reaper running every 0.5 s
        return "finished"

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "marathon")
        done = await status_is(db, job_id, "completed")
    assert (done["attempts"], done["last_error"]) == (1, None)


async def test_outcome_waiting_out_an_api_outage_is_recorded_and_the_job_never_reruns(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    finish = anyio.Event()
    runs: list[int] = []

    @app.handler("steady")
    async def steady(job: Job) -> str:
        runs.append(job.attempt)
        await finish.wait()
        return "done"

    async with running(app, worker_config(stack, lease_seconds=6)):
        job_id = await insert(db, "steady")
        await status_is(db, job_id, "processing")
        stack.faults.fail_rest(503, 3.5)  # longer than half a lease, when outcomes used to be given up
        finish.set()
        done = await status_is(db, job_id, "completed")
    assert (done["attempts"], done["result"], runs) == (1, '"done"', [1])


async def test_queue_statistics_are_logged_periodically(stack, db: asyncpg.Connection) -> None:
    app = Reactor()

    @app.handler("known")
    async def known(job: Job) -> None:
        return None

    lines: list[dict] = []
    sink = logger.add(
        lambda message: lines.append(message.record["extra"]),
        filter=lambda r: r["message"] == "queue statistics",
    )
    try:
        await insert(db, "unhandled")
        async with running(app, worker_config(stack, stats_seconds=0.2)):
            await wait_until(lambda: _true(bool(lines)))
    finally:
        logger.remove(sink)
    assert lines[0]["table"] == "jobs"
    assert lines[0]["pending_by_type"] == {"unhandled": 1}
    assert lines[0]["counts"]["pending"] == 1


async def _true(value: bool) -> bool:
    return value


async def test_reclaimed_job_past_the_handlers_max_attempts_fails_without_running(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    ran: list[int] = []

    @app.handler("capped", max_attempts=2)
    async def capped(job: Job) -> None:
        ran.append(job.attempt)

    job_id = await insert(db, "capped")
    await db.execute("update public.jobs set attempts = 2 where id = $1", job_id)  # two workers died on it
    async with running(app, worker_config(stack)):
        found = await status_is(db, job_id, "failed")
    assert ran == []
    assert (found["attempts"], found["last_error"]) == (3, "attempts exhausted: attempt 3 of at most 2")
