"""Cancelling a running job (sql/migrations/0013): its handler is stopped over Realtime, long
before a heartbeat would find out, cleans up, and nothing the worker does overwrites `cancelled`."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from reactor import Job, Reactor
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


async def test_cancelling_a_running_job_stops_its_handler_which_cleans_up(stack, db: asyncpg.Connection):
    app = Reactor()
    started, cleaned_up = anyio.Event(), anyio.Event()

    @app.handler("render")
    async def render(job: Job) -> None:
        started.set()
        try:
            await anyio.sleep(120)
        finally:
            cleaned_up.set()

    # Heartbeats every 20 s and no ticks: only the Realtime signal can stop it within the wait.
    async with running(app, worker_config(stack, **{**NO_POLLING, "lease_seconds": 60})):
        await subscribed(app)
        job_id = await insert(db, "render")
        with anyio.fail_after(20):
            await started.wait()
        answer = await db.fetchval("select public.reactor_cancel('jobs', array[$1::bigint])", job_id)
        assert f'"cancelled": [{job_id}]' in answer
        with anyio.fail_after(10):
            await cleaned_up.wait()
        await wait_until(lambda: _true(len(app.worker.running) == 0))
        assert app.metrics.jobs[("jobs", "render", "cancelled")] == 1
    stored = await row(db, job_id)
    assert (stored["status"], stored["result"], stored["last_error"]) == ("cancelled", None, None)


async def test_a_job_cancelled_while_pending_never_starts(stack, db: asyncpg.Connection):
    app = Reactor()

    @app.handler("render")
    async def render(job: Job) -> None:
        raise AssertionError("a cancelled job ran")

    job_id = await insert(db, "render")
    await db.fetchval("select public.reactor_cancel('jobs', array[$1::bigint])", job_id)
    async with running(app, worker_config(stack, **NO_POLLING)):
        await subscribed(app)
        await status_is(db, job_id, "cancelled")
        assert app.metrics.events["ticks"] >= 1  # the start-up sweep looked and left it


async def _true(value: bool) -> bool:
    return value
