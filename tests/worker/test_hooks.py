"""Completion hooks and middleware on a real worker against the local stack: a hook runs once,
after the outcome is in the row, only for final outcomes; a failing hook is retried, logged and
changes nothing; a hanging one holds up no other job; middleware wraps the handler in order and
what it raises counts as the handler's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import pytest
from loguru import logger

from reactor import Job, PermanentError, Reactor, Snooze
from reactor.hooks import Finished
from reactor.retry import RetryPolicy
from tests.support.worker import (
    NO_POLLING,
    insert,
    row,
    running,
    status_is,
    subscribed,
    wait_until,
    worker_config,
)

pytestmark = pytest.mark.anyio

QUICK_RETRY = RetryPolicy(base_seconds=0.05, cap_seconds=0.05)


@asynccontextmanager
async def captured() -> AsyncIterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(message.record), level="INFO")
    try:
        yield records
    finally:
        logger.remove(sink)


def hook_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["extra"].get("hook")]


async def test_a_hook_runs_once_after_the_completion_is_recorded_with_the_result(
    stack, database_url: str, db: asyncpg.Connection
) -> None:
    app = Reactor()
    calls: list[tuple[int, Finished, str]] = []

    @app.handler("add")
    async def add(job: Job) -> dict:
        return {"sum": job.payload["a"] + job.payload["b"]}

    @app.on_finished("add")
    async def notify(job: Job, finished: Finished) -> None:
        conn = await asyncpg.connect(database_url)  # what the row says while the hook runs
        try:
            status = await conn.fetchval("select status from public.jobs where id = $1", job.id)
        finally:
            await conn.close()
        calls.append((job.id, finished, status))

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "add", {"a": 2, "b": 3})
        await status_is(db, job_id, "completed")
        await wait_until(lambda: _true(bool(calls)))
        await anyio.sleep(0.5)  # several ticks: room for a second call, were there one
    assert calls == [(job_id, Finished("completed", result={"sum": 5}, attempt=1), "completed")]


async def test_a_hook_runs_once_after_a_permanent_failure_with_the_stored_error(
    stack, database_url: str, db: asyncpg.Connection
) -> None:
    app = Reactor()
    calls: list[tuple[Finished, str]] = []

    @app.handler("doomed", max_attempts=2, retry=QUICK_RETRY)
    async def doomed(job: Job) -> None:
        if job.attempt == 1:
            raise ValueError("first try")
        raise PermanentError("the address does not exist")

    @app.on_finished()
    async def notify(job: Job, finished: Finished) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            calls.append(
                (finished, await conn.fetchval("select status from public.jobs where id = $1", job.id))
            )
        finally:
            await conn.close()

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "doomed")
        found = await status_is(db, job_id, "failed")
        await wait_until(lambda: _true(bool(calls)))
        await anyio.sleep(0.5)
    assert found["attempts"] == 2
    assert calls == [
        (Finished("failed", error="PermanentError: the address does not exist", attempt=2), "failed")
    ]


async def test_no_hook_runs_for_a_retried_attempt_or_a_snooze(stack, db: asyncpg.Connection) -> None:
    app = Reactor()
    calls: list[tuple[str, str, int]] = []
    runs: list[tuple[str, int]] = []

    @app.handler("bumpy", retry=QUICK_RETRY)
    async def bumpy(job: Job) -> str:
        runs.append((job.payload["how"], job.attempt))
        if job.payload["how"] == "retry" and job.attempt == 1:
            raise RuntimeError("downstream hiccup")
        if job.payload["how"] == "snooze" and len([r for r in runs if r[0] == "snooze"]) == 1:
            raise Snooze(0.1)
        return "done"

    @app.on_finished("bumpy")
    async def notify(job: Job, finished: Finished) -> None:
        calls.append((job.payload["how"], finished.kind, finished.attempt))

    async with running(app, worker_config(stack)):
        retried = await insert(db, "bumpy", {"how": "retry"})
        snoozed = await insert(db, "bumpy", {"how": "snooze"})
        for job_id in (retried, snoozed):
            await status_is(db, job_id, "completed")
        await wait_until(lambda: _true(len(calls) == 2))
        await anyio.sleep(0.5)
    assert sorted(runs) == [("retry", 1), ("retry", 2), ("snooze", 1), ("snooze", 1)]
    assert sorted(calls) == [("retry", "completed", 2), ("snooze", "completed", 1)]


async def test_a_failing_hook_is_retried_then_logged_and_the_job_is_left_as_recorded(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    runs, tries = 0, 0

    @app.handler("send")
    async def send(job: Job) -> dict:
        nonlocal runs
        runs += 1
        return {"sent": True}

    @app.on_finished("send", retries=2, retry=QUICK_RETRY)
    async def webhook(job: Job, finished: Finished) -> None:
        nonlocal tries
        tries += 1
        raise ConnectionError("the partner's endpoint is down")

    async with captured() as records, running(app, worker_config(stack)):
        job_id = await insert(db, "send")
        recorded = await status_is(db, job_id, "completed")
        await wait_until(lambda: _true(bool(hook_lines(records))))
        await anyio.sleep(0.5)  # room for a fourth try or a rerun, were there one
    [line] = hook_lines(records)
    assert tries == 3 and runs == 1
    assert line["level"].name == "ERROR"
    assert line["extra"]["hook"].endswith("<locals>.webhook")
    fields = {
        k: line["extra"][k] for k in ("job_id", "table", "job_type", "attempt", "hook_tries", "outcome")
    }
    assert fields == {
        "job_id": job_id,
        "table": "jobs",
        "job_type": "send",
        "attempt": 1,
        "hook_tries": 3,
        "outcome": "completed",
    }
    assert line["extra"]["worker_id"] == app.worker.config.worker_id
    assert "ConnectionError: the partner's endpoint is down" in line["message"]
    after = await row(db, job_id)
    assert dict(after) == dict(recorded)  # not a column changed, not even updated_at
    assert json.loads(after["result"]) == {"sent": True} and after["attempts"] == 1


async def test_hanging_hooks_hold_up_no_outcome_and_are_logged_as_not_run_at_shutdown(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    hanging = 0

    @app.handler("echo")
    async def echo(job: Job) -> Any:
        return job.payload

    @app.on_finished(timeout=None)
    async def hangs(job: Job, finished: Finished) -> None:
        nonlocal hanging
        hanging += 1
        await anyio.sleep(120)

    # Two hook slots (the worker's concurrency), both taken by hooks that never return.
    config = worker_config(stack, concurrency=2, grace_seconds=1.0)
    async with captured() as records:
        with anyio.fail_after(60):  # the grace period and a margin, never the hooks' 120 s
            async with running(app, config):
                first = [await insert(db, "echo", {"n": n}) for n in range(2)]
                await wait_until(lambda: _true(hanging == 2))
                later = [await insert(db, "echo", {"n": n}) for n in range(2, 12)]
                for job_id in later:
                    await status_is(db, job_id, "completed")
                assert hanging == 2  # every later job's outcome was recorded while no hook could run
    statuses = await db.fetch("select status from public.jobs where id = any($1)", first + later)
    assert {s["status"] for s in statuses} == {"completed"}
    lines = hook_lines(records)
    assert len(lines) == 12
    assert sum("grace period ended while it ran" in r["message"] for r in lines) == 2
    assert sum("grace period ended before it started" in r["message"] for r in lines) == 10


async def test_a_hook_runs_once_for_a_running_job_cancelled_on_request(stack, db: asyncpg.Connection) -> None:
    app = Reactor()
    started = anyio.Event()
    calls: list[tuple[int, Finished]] = []

    @app.handler("render")
    async def render(job: Job) -> None:
        started.set()
        await anyio.sleep(120)

    @app.on_finished("render")
    async def notify(job: Job, finished: Finished) -> None:
        calls.append((job.id, finished))

    async with running(app, worker_config(stack, **{**NO_POLLING, "lease_seconds": 60})):
        await subscribed(app)
        job_id = await insert(db, "render")
        with anyio.fail_after(20):
            await started.wait()
        await db.fetchval("select public.reactor_cancel('jobs', array[$1::bigint])", job_id)
        await wait_until(lambda: _true(bool(calls)))
        await anyio.sleep(0.3)
    assert calls == [(job_id, Finished("cancelled", attempt=1))]
    assert (await row(db, job_id))["status"] == "cancelled"


async def test_middleware_wraps_the_handler_in_order_and_what_it_raises_counts_as_the_handlers(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    seen: list[tuple[str, str]] = []

    @app.middleware
    async def outer(job: Job, call_next: Any) -> Any:
        seen.append((job.payload["case"], "outer in"))
        try:
            return await call_next(job)
        except ValueError as exc:
            seen.append((job.payload["case"], f"outer saw {exc}"))
            raise
        finally:
            seen.append((job.payload["case"], "outer out"))

    @app.middleware
    async def gate(job: Job, call_next: Any) -> Any:
        seen.append((job.payload["case"], "gate in"))
        if job.payload["case"] == "refused":
            raise PermanentError("not for this tenant")
        if job.payload["case"] == "stuck":
            await anyio.sleep(60)  # the handler's timeout covers middleware too
        return {"wrapped": await call_next(job)}

    @app.handler("work", timeout=0.5, max_attempts=1)
    async def work(job: Job) -> Any:
        seen.append((job.payload["case"], "handler"))
        if job.payload["case"] == "raises":
            raise ValueError("bad input")
        return "ok"

    async with running(app, worker_config(stack)):
        ids = {
            case: await insert(db, "work", {"case": case}) for case in ("fine", "refused", "raises", "stuck")
        }
        done = {case: await status_is(db, job_id, "completed", "failed") for case, job_id in ids.items()}
    assert (done["fine"]["status"], json.loads(done["fine"]["result"])) == ("completed", {"wrapped": "ok"})
    assert (done["refused"]["status"], done["refused"]["last_error"]) == (
        "failed",
        "PermanentError: not for this tenant",
    )
    assert (done["raises"]["status"], done["raises"]["last_error"]) == ("failed", "ValueError: bad input")
    assert (done["stuck"]["status"], done["stuck"]["last_error"]) == ("failed", "timed out after 0.5 s")

    def steps(case: str) -> list[str]:
        return [step for c, step in seen if c == case]

    assert steps("fine") == ["outer in", "gate in", "handler", "outer out"]
    assert steps("refused") == ["outer in", "gate in", "outer out"]
    assert steps("raises") == ["outer in", "gate in", "handler", "outer saw bad input", "outer out"]
    assert steps("stuck") == ["outer in", "gate in", "outer out"]


async def _true(value: bool) -> bool:
    return value
