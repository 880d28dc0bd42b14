"""Real `reactor run` worker processes: killed, stopped, misconfigured, and what they print."""

from __future__ import annotations

import json
import signal
import time

import anyio
import asyncpg
import pytest

from reactor.store import Store
from reactor.worker import OUTCOME_GIVE_UP_SECONDS
from tests.support.worker import insert, row, status_is, worker_env, worker_process

pytestmark = pytest.mark.anyio


async def test_killed_worker_job_is_reclaimed_after_its_lease_and_old_token_is_rejected(
    stack, db: asyncpg.Connection
) -> None:
    job_id = await insert(db, "sleep", {"seconds": 60})
    async with worker_process(worker_env(stack, REACTOR_WORKER_ID="first")) as first:
        held = await status_is(db, job_id, "processing")
        first.signal(signal.SIGKILL)
        await first.wait()
    assert held["locked_by"] == "first"
    async with worker_process(worker_env(stack, REACTOR_WORKER_ID="second")) as second:
        done = await status_is(db, job_id, "completed", timeout=30)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0
    assert (done["locked_by"], done["attempts"], json.loads(done["result"])["attempt"]) == ("second", 2, 2)
    assert "lease expired: worker first stopped reporting" in done["last_error"]

    store = Store(stack.url, stack.keys.service_role)
    late = await store.complete(
        "jobs", [{"id": job_id, "lease_token": str(held["lease_token"]), "result": "late"}]
    )
    await store.aclose()
    assert late == {"completed": [], "stale": [job_id]}
    assert json.loads((await row(db, job_id))["result"])["attempt"] == 2


async def test_sigterm_drains_running_jobs_hands_back_the_rest_and_exits_zero(
    stack, db: asyncpg.Connection
) -> None:
    env = worker_env(stack, REACTOR_GRACE_SECONDS="1.5")
    async with worker_process(env) as worker:
        quick_id = await insert(db, "sleep", {"seconds": 0.8})
        slow_id = await insert(db, "sleep", {"seconds": 60})
        await status_is(db, quick_id, "processing")
        await status_is(db, slow_id, "processing")
        signalled = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
        # README: give a worker REACTOR_GRACE_SECONDS plus 10 s to stop; 10 times the grace is 15 s.
        assert time.monotonic() - signalled < 1.5 + OUTCOME_GIVE_UP_SECONDS
    assert (await row(db, quick_id))["status"] == "completed"
    slow = await row(db, slow_id)
    assert (slow["status"], slow["attempts"], slow["locked_by"]) == ("pending", 0, None)
    assert "handed back 1 unfinished jobs in jobs" in worker.output


async def test_json_log_lines_parse_carry_job_fields_and_never_show_the_service_key(
    stack, db: asyncpg.Connection
) -> None:
    key = stack.keys.service_role
    async with worker_process(worker_env(stack, REACTOR_LOG_FORMAT="json", REACTOR_WORKER_ID="w1")) as worker:
        echo_id = await insert(db, "echo", {"hello": "world"})
        leaky_id = await insert(db, "leaky")
        await status_is(db, echo_id, "completed")
        await status_is(db, leaky_id, "failed")
        await worker.wait_for_output("job failed for good")
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert key not in worker.output
    lines = [json.loads(line) for line in worker.stdout.decode().splitlines()]  # JSON logs: stdout
    completed = next(line for line in lines if line["message"] == "job completed")
    assert {k: completed[k] for k in ("job_id", "table", "job_type", "attempt", "worker_id", "outcome")} == {
        "job_id": echo_id,
        "table": "jobs",
        "job_type": "echo",
        "attempt": 1,
        "worker_id": "w1",
        "outcome": "completed",
    }
    assert completed["duration_ms"] >= 0
    leaked = next(line for line in lines if line["message"].startswith("calling out with"))
    assert leaked["message"] == "calling out with [REDACTED]"


async def test_wrong_key_is_reported_clearly_and_the_worker_keeps_retrying(stack) -> None:
    env = worker_env(stack, SUPABASE_SERVICE_ROLE_KEY="not-the-key")
    async with worker_process(env) as worker:
        await worker.wait_for_output("cannot claim jobs")
        await anyio.sleep(1.0)
        assert worker.process.returncode is None
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert "check SUPABASE_SERVICE_ROLE_KEY" in worker.output
    assert worker.output.count("cannot claim jobs") == 1  # one line, not one per sweep
    assert "not-the-key" not in worker.output


async def test_unreachable_url_is_reported_and_retried_without_crashing(stack) -> None:
    env = worker_env(stack, SUPABASE_URL="http://127.0.0.1:9")
    async with worker_process(env) as worker:
        await worker.wait_for_output("cannot reach the API")
        await anyio.sleep(1.0)
        assert worker.process.returncode is None
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0


async def test_second_signal_exits_at_once_leaving_the_job_to_the_reaper(
    stack, db: asyncpg.Connection
) -> None:
    env = worker_env(stack, REACTOR_GRACE_SECONDS="60")
    async with worker_process(env) as worker:
        job_id = await insert(db, "sleep", {"seconds": 60})
        await status_is(db, job_id, "processing")
        worker.signal(signal.SIGTERM)
        await worker.wait_for_output("waiting for running jobs")
        worker.signal(signal.SIGTERM)
        assert await worker.wait(timeout=10) != 0
    assert "second signal: exiting at once" in worker.output
    assert (await row(db, job_id))["status"] == "processing"  # until its lease expires and a reaper runs
