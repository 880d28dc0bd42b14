"""Completion hooks and middleware, their pure parts: middleware order and what its exceptions
mean (through reactor.testing), hook retries counted, hooks only for final outcomes, a full
backlog and shutdown logging what did not run; the worker runs on the in-memory store. The same
behaviours are proven on the local stack by tests/worker/test_hooks.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from loguru import logger

from reactor import Job, PermanentError, Reactor, RetryLater, Snooze
from reactor.config import load
from reactor.hooks import Finished, Hook, Hooks
from reactor.memory import MemoryStore
from reactor.redact import Redactor
from reactor.retry import RetryPolicy
from reactor.testing import perform

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
TINY = RetryPolicy(0.001, 0.001)


@asynccontextmanager
async def serving(app: Reactor, store: MemoryStore, **overrides: Any) -> AsyncIterator[Reactor]:
    app.worker = None
    async with anyio.create_task_group() as group:
        group.start_soon(app.serve, load({}, **{**QUICK, **overrides}), False, store)
        try:
            yield app
        finally:
            app.stop()


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.01)
    return value


@asynccontextmanager
async def captured() -> AsyncIterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        yield records
    finally:
        logger.remove(sink)


def layered_app(seen: list[str]) -> Reactor:
    app = Reactor()

    @app.middleware
    async def outer(job: Job, call_next: Any) -> Any:
        seen.append("outer in")
        try:
            return {"outer": await call_next(job)}
        finally:
            seen.append("outer out")

    @app.middleware
    async def inner(job: Job, call_next: Any) -> Any:
        seen.append("inner in")
        if job.payload.get("stop") == "inner":
            raise PermanentError("inner refused")
        try:
            return await call_next(job)
        except ValueError as exc:
            seen.append(f"inner saw {exc}")
            raise
        finally:
            seen.append("inner out")

    @app.handler("work", timeout=0.2)
    async def work(job: Job) -> Any:
        seen.append("handler")
        if job.payload.get("raise"):
            raise ValueError(job.payload["raise"])
        if job.payload.get("hang"):
            await anyio.sleep(10)
        return job.payload.get("value")

    return app


async def test_middleware_runs_in_registration_order_around_the_handler() -> None:
    seen: list[str] = []
    done = await perform(layered_app(seen), "work", {"value": 7})
    assert (done.outcome.kind, done.outcome.result) == ("completed", {"outer": 7})
    assert seen == ["outer in", "inner in", "handler", "inner out", "outer out"]


async def test_a_middleware_that_raises_counts_as_the_handler_raising() -> None:
    seen: list[str] = []
    done = await perform(layered_app(seen), "work", {"stop": "inner"})
    assert (done.outcome.kind, done.outcome.error) == ("failed", "PermanentError: inner refused")
    assert seen == ["outer in", "inner in", "outer out"]  # the handler never ran


async def test_the_handlers_exception_passes_through_every_middleware_and_is_classified() -> None:
    seen: list[str] = []
    done = await perform(layered_app(seen), "work", {"raise": "nope"}, max_attempts=3)
    assert (done.outcome.kind, done.outcome.error) == ("retried", "ValueError: nope")
    assert seen == ["outer in", "inner in", "handler", "inner saw nope", "inner out", "outer out"]


async def test_the_handlers_timeout_covers_its_middleware() -> None:
    seen: list[str] = []
    done = await perform(layered_app(seen), "work", {"hang": True}, max_attempts=3)
    assert (done.outcome.kind, done.outcome.error) == ("retried", "timed out after 0.2 s")
    assert seen[-2:] == ["inner out", "outer out"]  # both unwound on the cancel


async def test_a_failing_hook_is_tried_retries_plus_one_times_then_logged_once() -> None:
    app, store = Reactor(), MemoryStore()
    tries: list[Finished] = []

    @app.handler("echo")
    async def echo(job: Job) -> Any:
        return job.payload

    @app.on_finished("echo", retries=2, retry=TINY)
    async def broken_hook(job: Job, finished: Finished) -> None:
        tries.append(finished)
        raise RuntimeError("the webhook is down")

    async with captured() as records:
        job_id = await store.enqueue("jobs", {"job_type": "echo", "payload": {"n": 1}})
        async with serving(app, store):
            await until(lambda: len(tries) == 3)
            await anyio.sleep(0.1)  # room for a fourth try, were there one
    assert tries == [Finished("completed", result={"n": 1}, attempt=1)] * 3
    failed = [r for r in records if r["extra"].get("hook")]
    assert len(failed) == 1
    assert failed[0]["level"].name == "ERROR"
    expected = {
        "hook": "tests.unit.test_hooks_and_middleware."
        "test_a_failing_hook_is_tried_retries_plus_one_times_then_logged_once.<locals>.broken_hook",
        "hook_tries": 3,
        "job_id": job_id,
        "job_type": "echo",
        "table": "jobs",
        "worker_id": "unit",
        "outcome": "completed",
    }
    assert {k: failed[0]["extra"].get(k) for k in expected} == expected
    assert "RuntimeError: the webhook is down" in failed[0]["message"]
    assert store.row("jobs", job_id)["status"] == "completed"


async def test_a_hook_that_fails_then_succeeds_logs_nothing() -> None:
    app, store = Reactor(), MemoryStore()
    tries = 0

    @app.handler("echo")
    async def echo(job: Job) -> Any:
        return None

    @app.on_finished(retries=3, retry=TINY)
    async def flaky_hook(job: Job, finished: Finished) -> None:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise RuntimeError("not yet")

    async with captured() as records:
        await store.enqueue("jobs", {"job_type": "echo"})
        async with serving(app, store):
            await until(lambda: tries == 3)
            await anyio.sleep(0.1)
    assert tries == 3
    assert [r for r in records if r["extra"].get("hook")] == []


async def test_hooks_run_only_for_final_outcomes_and_only_for_their_job_type() -> None:
    app, store = Reactor(), MemoryStore()
    seen: list[tuple[str, int, str, int]] = []

    @app.handler("twice")
    async def twice(job: Job) -> str:
        if job.payload == "snooze" and job.attempt == 1 and not seen:
            raise Snooze(0.05)
        if job.payload in ("retry", "retry then fail") and job.attempt == 1:
            raise RetryLater(0.05)
        if job.payload == "retry then fail":
            raise PermanentError("gave up")
        return f"done at {job.attempt}"

    @app.handler("other")
    async def other(job: Job) -> None:
        return None

    @app.on_finished("twice")
    async def hook(job: Job, finished: Finished) -> None:
        seen.append((job.payload, job.id, finished.kind, finished.attempt))

    ids = {
        p: await store.enqueue("jobs", {"job_type": "twice", "payload": p})
        for p in ("retry", "retry then fail", "snooze")
    }
    other_id = await store.enqueue("jobs", {"job_type": "other"})
    async with serving(app, store):
        await until(lambda: len(seen) == 3)
        await until(lambda: store.row("jobs", other_id)["status"] == "completed")
        await anyio.sleep(0.1)
    assert sorted(seen) == sorted(
        [
            ("retry", ids["retry"], "completed", 2),
            ("retry then fail", ids["retry then fail"], "failed", 2),
            ("snooze", ids["snooze"], "completed", 1),
        ]
    )


async def test_a_full_backlog_logs_the_hook_as_not_run_and_never_blocks() -> None:
    async def hook(job: Job, finished: Finished) -> None:
        return None

    hooks = Hooks([Hook(hook, None)], Redactor(["s3cret"]), concurrency=1, backlog=1)
    job = Job(1, "jobs", "echo", {}, 1, 5, "token")
    async with captured() as records:
        hooks.recorded(job, "failed", {"id": 1, "error": "leaked s3cret"})
        hooks.recorded(job, "completed", {"id": 1, "result": 1})  # the backlog holds one
    [line] = [r for r in records if r["extra"].get("hook")]
    assert "not run: 1 hooks are waiting already" in line["message"]
    call = hooks._receive.receive_nowait()
    assert call.finished == Finished("failed", error="leaked [REDACTED]", attempt=1)


async def test_at_shutdown_hooks_get_the_grace_period_then_are_logged_as_not_run() -> None:
    app, store = Reactor(), MemoryStore()
    started = 0

    @app.handler("echo")
    async def echo(job: Job) -> None:
        return None

    @app.on_finished(timeout=None)
    async def hangs(job: Job, finished: Finished) -> None:
        nonlocal started
        started += 1
        await anyio.sleep(60)

    async with captured() as records:
        for _ in range(5):
            await store.enqueue("jobs", {"job_type": "echo"})
        with anyio.fail_after(10):  # the grace period (0.3 s) and a margin, never the hooks' 60 s
            async with serving(app, store, concurrency=2, grace_seconds=0.3):
                await until(lambda: started == 2)
                await until(lambda: all(store.row("jobs", i)["status"] == "completed" for i in range(1, 6)))
    lines = [r for r in records if r["extra"].get("hook")]
    assert len(lines) == 5
    assert sum("ended while it ran" in r["message"] for r in lines) == 2
    assert sum("ended before it started" in r["message"] for r in lines) == 3


def test_the_worker_imports_without_opentelemetry_and_tracing_says_how_to_get_it() -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import reactor, reactor.worker, reactor.cli, reactor.testing\n"
        "try:\n    import reactor.tracing\nexcept ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'reactor[otel]'" in done.stdout
