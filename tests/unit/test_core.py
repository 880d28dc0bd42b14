"""The worker's core (dispatcher, runner, reporter, lease keeper, ticker, poller) run whole on the
in-memory store: no database, no local stack, so these are fast enough to run against every
mutant of the core (docs/reliability.md, "Mutation testing"). The same behaviours are proven on
the local stack by tests/worker; tests/contract/test_store.py holds the in-memory store to the
SQL contract."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from reactor import Job, PermanentError, Reactor, RetryLater
from reactor.config import Config, load
from reactor.memory import MemoryStore
from reactor.store import Unavailable

pytestmark = pytest.mark.anyio

QUICK = {
    "supabase_url": "http://memory.invalid",
    "service_key": "unused-by-the-memory-store",
    "realtime": False,
    "lease_seconds": 3,
    "poll_fast_seconds": 0.05,
    "poll_slow_seconds": 0.05,
    "reap_seconds": 0.1,
    "stats_seconds": 30.0,
    "grace_seconds": 2.0,
    "retry_base_seconds": 0.01,
    "retry_cap_seconds": 0.01,
    "health_port": None,
    "worker_id": "unit",
}


def config(**overrides: Any) -> Config:
    return load({}, **{**QUICK, **overrides})


@asynccontextmanager
async def serving(app: Reactor, store: MemoryStore, **overrides: Any) -> AsyncIterator[Reactor]:
    app.worker = None
    async with anyio.create_task_group() as group:
        group.start_soon(app.serve, config(**overrides), False, store)
        try:
            yield app
        finally:
            app.stop()


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `check` until it is truthy: a safety net, not a timing assertion."""
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.01)
    return value


def status(store: MemoryStore, job_id: int) -> str:
    return store.row("jobs", job_id)["status"]


async def test_a_job_runs_and_its_result_is_recorded() -> None:
    app, store = Reactor(), MemoryStore()

    @app.handler("echo")
    async def echo(job: Job) -> object:
        return {"got": job.payload, "attempt": job.attempt}

    job_id = await store.enqueue("jobs", {"job_type": "echo", "payload": {"n": 1}})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "completed")
    assert store.row("jobs", job_id)["result"] == {"got": {"n": 1}, "attempt": 1}
    assert app.metrics.jobs[("jobs", "echo", "completed")] == 1


async def test_a_raising_handler_is_retried_until_its_attempts_are_spent() -> None:
    app, store = Reactor(), MemoryStore()
    attempts: list[int] = []

    @app.handler("flaky")
    async def flaky(job: Job) -> None:
        attempts.append(job.attempt)
        raise ValueError(f"broke on attempt {job.attempt}")

    job_id = await store.enqueue("jobs", {"job_type": "flaky", "max_attempts": 3})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "failed")
    assert attempts == [1, 2, 3]
    assert store.row("jobs", job_id)["last_error"] == "ValueError: broke on attempt 3"


async def test_a_permanent_error_fails_the_job_at_once() -> None:
    app, store = Reactor(), MemoryStore()

    @app.handler("bad")
    async def bad(job: Job) -> None:
        raise PermanentError("card declined")

    job_id = await store.enqueue("jobs", {"job_type": "bad", "max_attempts": 5})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "failed")
    row = store.row("jobs", job_id)
    assert (row["attempts"], row["last_error"]) == (1, "PermanentError: card declined")


async def test_a_handler_past_its_timeout_is_cancelled_and_retried() -> None:
    app, store = Reactor(), MemoryStore()
    runs: list[int] = []

    @app.handler("slow", timeout=0.2)
    async def slow(job: Job) -> str:
        runs.append(job.attempt)
        if job.attempt == 1:
            await anyio.sleep(30)
        return "second time lucky"

    job_id = await store.enqueue("jobs", {"job_type": "slow"})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "completed")
    assert runs == [1, 2]
    assert store.row("jobs", job_id)["last_error"] == "timed out after 0.2 s"


async def test_no_more_jobs_run_at_once_than_the_concurrency() -> None:
    app, store = Reactor(), MemoryStore()
    now_running, most = 0, 0

    @app.handler("work")
    async def work(job: Job) -> None:
        nonlocal now_running, most
        now_running += 1
        most = max(most, now_running)
        await anyio.sleep(0.02)
        now_running -= 1

    ids = [await store.enqueue("jobs", {"job_type": "work"}) for _ in range(20)]
    async with serving(app, store, concurrency=3):
        await until(lambda: all(status(store, i) == "completed" for i in ids))
    assert most == 3


async def test_a_retry_later_starts_on_its_timer_not_on_the_next_tick() -> None:
    app, store = Reactor(), MemoryStore()
    started: list[float] = []

    @app.handler("later")
    async def later(job: Job) -> None:
        started.append(time.monotonic())
        if job.attempt == 1:
            raise RetryLater(0.3)

    job_id = await store.enqueue("jobs", {"job_type": "later"})
    async with serving(app, store, poll_fast_seconds=60, poll_slow_seconds=60, reap_seconds=60):
        await until(lambda: status(store, job_id) == "completed")
    assert len(started) == 2
    assert 0.3 <= started[1] - started[0] < 30  # on the timer; the next tick is a minute away


async def test_a_lost_lease_cancels_the_handler_and_nothing_is_reported() -> None:
    app, store = Reactor(), MemoryStore()
    cancelled, held = anyio.Event(), []

    @app.handler("long")
    async def long(job: Job) -> None:
        store.tables["jobs"][
            job.id
        ].lease_token = "00000000-0000-4000-8000-00000000beef"  # reaped, re-claimed
        held.append(await job.set_progress(10))
        try:
            await anyio.sleep(30)
        finally:
            cancelled.set()

    job_id = await store.enqueue("jobs", {"job_type": "long"})
    async with serving(app, store):
        await until(cancelled.is_set)
    assert held == [False]
    assert status(store, job_id) == "processing"
    assert not any(
        function in ("reactor_complete", "reactor_fail", "reactor_release") for function, _ in store.calls
    )
    assert app.metrics.jobs[("jobs", "long", "lost")] == 1


async def test_progress_is_written_to_the_row() -> None:
    app, store = Reactor(), MemoryStore()

    @app.handler("steps")
    async def steps(job: Job) -> None:
        assert await job.set_progress(50, "half way") is True

    job_id = await store.enqueue("jobs", {"job_type": "steps"})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "completed")
    assert store.row("jobs", job_id)["progress_message"] == "half way"


async def test_shutdown_hands_back_what_outlives_the_grace_period_with_its_attempt_unspent() -> None:
    app, store = Reactor(), MemoryStore()
    started = anyio.Event()

    @app.handler("forever")
    async def forever(job: Job) -> None:
        started.set()
        await anyio.sleep(60)

    job_id = await store.enqueue("jobs", {"job_type": "forever"})
    began = time.monotonic()
    async with serving(app, store, grace_seconds=0.2):
        await started.wait()
    row = store.row("jobs", job_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert time.monotonic() - began < 10
    assert app.metrics.jobs[("jobs", "forever", "released")] == 1


async def test_an_unreadable_row_fails_alone_and_the_rest_of_its_batch_runs() -> None:
    app, store = Reactor(), MemoryStore()

    @app.handler("echo")
    async def echo(job: Job) -> str:
        return "ok"

    bad = await store.enqueue("jobs", {"job_type": "echo", "user_id": "not-a-uuid"})
    good = await store.enqueue("jobs", {"job_type": "echo"})
    async with serving(app, store):
        await until(lambda: status(store, good) == "completed" and status(store, bad) == "failed")
    assert store.row("jobs", bad)["last_error"] == "the job's row cannot be read: user_id is not a UUID"


async def test_an_expired_lease_is_reaped_by_a_tick_and_the_job_runs_again() -> None:
    app, store = Reactor(), MemoryStore()
    job_id = await store.enqueue("jobs", {"job_type": "echo"})
    await store.claim("jobs", "dead-worker", ["echo"], 1, 1)
    attempts: list[int] = []

    @app.handler("echo")
    async def echo(job: Job) -> None:
        attempts.append(job.attempt)

    async with serving(app, store):
        await until(lambda: status(store, job_id) == "completed")
    assert attempts == [2]
    assert store.row("jobs", job_id)["last_error"].startswith("lease expired: worker dead-worker")


async def test_a_job_scheduled_later_waits_for_its_time() -> None:
    app, store = Reactor(), MemoryStore()
    ran_at: list[datetime] = []

    @app.handler("timed")
    async def timed(job: Job) -> None:
        ran_at.append(datetime.now(UTC))

    due = datetime.now(UTC) + timedelta(seconds=0.4)
    job_id = await store.enqueue("jobs", {"job_type": "timed", "run_at": due.isoformat()})
    async with serving(app, store, poll_fast_seconds=60, poll_slow_seconds=60, reap_seconds=60):
        await until(lambda: status(store, job_id) == "completed")
    assert ran_at[0] >= due


async def test_outcomes_wait_out_a_down_api_and_are_recorded_when_it_answers() -> None:
    app, store = Reactor(), MemoryStore()
    down = FlakyStore(store, failing={"reactor_complete"})

    @app.handler("echo")
    async def echo(job: Job) -> str:
        return "done"

    job_id = await store.enqueue("jobs", {"job_type": "echo"})
    async with serving(app, down):  # type: ignore[arg-type]
        await until(lambda: down.refused >= 2)
        assert status(store, job_id) == "processing"
        down.failing.clear()
        await until(lambda: status(store, job_id) == "completed")
    assert store.row("jobs", job_id)["result"] == "done"


class FlakyStore:
    """The memory store with some calls failing as an unreachable API does."""

    def __init__(self, store: MemoryStore, failing: set[str]) -> None:
        self._store = store
        self.failing = failing
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if f"reactor_{name}" in self.failing:
                self.refused += 1
                raise Unavailable(f"reactor_{name}: cannot reach the API: ConnectError")
            return await attribute(*args, **kwargs)

        return call
