"""Pickup through Realtime, and staying correct when Realtime closes, goes silent or goes away."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import pytest

from reactor import Job, Reactor
from tests.support.worker import (
    NO_POLLING,
    echo_app,
    insert,
    running,
    status_is,
    subscribed,
    wait_until,
    worker_config,
)

pytestmark = pytest.mark.anyio


async def test_jobs_are_picked_up_through_realtime_alone(stack, db: asyncpg.Connection) -> None:
    app = echo_app()
    async with running(app, worker_config(stack, **NO_POLLING)):
        await subscribed(app)
        for n in range(3):
            job_id = await insert(db, "echo", {"n": n})
            await status_is(db, job_id, "completed")
        sweeps, subscriptions = app.metrics.events["ticks"], app.metrics.events["realtime_subscriptions"]
    assert (sweeps, subscriptions) == (1, 1)  # only the start-up sweep: events did the rest


async def test_closed_socket_switches_to_fast_polling_within_a_second(stack, db: asyncpg.Connection) -> None:
    app = echo_app()
    config = worker_config(stack, **{**NO_POLLING, "poll_fast_seconds": 0.2})
    async with running(app, config):
        await subscribed(app)
        assert app.worker.poller.interval() == 600.0
        stack.faults.refuse_websockets(600)
        closed_at = time.monotonic()
        await stack.realtime.close_sockets(1006)
        await wait_until(lambda: _true(app.worker.listener.went_down_at is not None))
        assert app.worker.listener.went_down_at - closed_at < 1.0
        assert app.worker.poller.interval() == 0.2
        job_id = await insert(db, "echo", {"while": "down"})
        await status_is(db, job_id, "completed")
        stack.faults.clear()
        await subscribed(app, times=2)
        assert app.worker.poller.interval() == 600.0


async def test_silent_feed_is_found_by_the_probe_and_polling_takes_over(
    stack, db: asyncpg.Connection
) -> None:
    app = echo_app()
    config = worker_config(
        stack, realtime=True, poll_fast_seconds=0.2, poll_slow_seconds=600.0, probe_seconds=6.0
    )
    async with running(app, config):
        await subscribed(app)
        stack.faults.go_silent(600)
        silent_at = time.monotonic()
        await wait_until(lambda: _true(app.worker.listener.went_down_at is not None), timeout=30)
        # Found within probe_seconds (6 s): quiet for 4 s, then a probe given 2 s. A probe sent only
        # after a whole quiet probe period would take 8 s.
        assert app.worker.listener.went_down_at - silent_at <= 6.0 + 1.0
        job_id = await insert(db, "echo", {"while": "silent"})
        await status_is(db, job_id, "completed")
        stack.faults.clear()
        await subscribed(app, times=2)
    assert await db.fetchval("select count(*) from public.jobs where job_type = 'reactor.probe'") == 0


async def test_probe_of_a_healthy_feed_comes_back_and_keeps_the_subscription(
    stack, db: asyncpg.Connection
) -> None:
    app = echo_app()
    async with running(app, worker_config(stack, **{**NO_POLLING, "probe_seconds": 1.5})):
        await subscribed(app)
        await wait_until(lambda: _true(app.metrics.events["realtime_probes_heard"] >= 1))
        before, heard_before = app.worker.store.calls.copy(), app.metrics.events["realtime_probes_heard"]
        await wait_until(lambda: _true(app.metrics.events["realtime_probes_heard"] >= heard_before + 3))
        assert (app.metrics.events["realtime_subscriptions"], app.worker.listener.state) == (1, "subscribed")
        calls = app.worker.store.calls - before
        heard = app.metrics.events["realtime_probes_heard"] - heard_before
    # Idle, the worker's only requests are ticks, one per probe, each also reaping and sweeping.
    assert set(calls) == {("reactor_tick", "ok")}
    assert heard <= calls[("reactor_tick", "ok")] <= heard + 1
    assert await db.fetchval("select count(*) from public.jobs") == 0  # probe rows are removed


@pytest.mark.parametrize("outage_seconds", [20.0, pytest.param(60.0, marks=pytest.mark.slow)])
async def test_realtime_recovers_after_an_outage_longer_than_the_client_retries(
    stack, db: asyncpg.Connection, outage_seconds: float
) -> None:
    app = echo_app()
    config = worker_config(stack, realtime=True, poll_fast_seconds=0.5, poll_slow_seconds=600.0)
    async with running(app, config):
        await subscribed(app)
        stack.faults.refuse_websockets(outage_seconds)
        await stack.realtime.close_sockets(1006)
        ids = []
        deadline = time.monotonic() + outage_seconds
        while time.monotonic() < deadline:
            ids.append(await insert(db, "echo", {"n": len(ids)}))
            await anyio.sleep(outage_seconds / 10)
        await subscribed(app, times=2)
        for job_id in ids:
            await status_is(db, job_id, "completed")
        after = await insert(db, "echo", {"after": "outage"})
        await status_is(db, after, "completed")


async def _true(value: bool) -> bool:
    return value


async def standing_by(db: asyncpg.Connection) -> bool:
    return await db.fetchval("select count(*) from reactor.standby") > 0


async def test_scheduled_job_heard_over_realtime_starts_on_time(stack, db: asyncpg.Connection) -> None:
    app = Reactor()
    started: list[datetime] = []

    @app.handler("later")
    async def later(job: Job) -> None:
        started.append(datetime.now(UTC))

    async with running(app, worker_config(stack, **NO_POLLING)):
        await subscribed(app)
        await wait_until(lambda: standing_by(db))  # the insert names a worker standing by: its herald
        run_at = datetime.now(UTC) + timedelta(seconds=1.5)
        job_id = await insert(db, "later", run_at=run_at)
        await status_is(db, job_id, "completed")
    assert app.metrics.events["ticks"] == 1
    assert 0 <= (started[0] - run_at).total_seconds() < 1.0


async def test_scheduled_job_that_realtime_never_announced_starts_on_time(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    started: list[datetime] = []

    @app.handler("later")
    async def later(job: Job) -> None:
        started.append(datetime.now(UTC))

    run_at = datetime.now(UTC) + timedelta(seconds=3)
    job_id = await insert(db, "later", run_at=run_at)  # before the worker subscribes: never announced
    async with running(app, worker_config(stack, **NO_POLLING)):
        await status_is(db, job_id, "completed")
    # The start-up tick said when it falls due; a timer's tick at that time claimed it.
    assert app.metrics.events["ticks"] == 2
    assert 0 <= (started[0] - run_at).total_seconds() < 1.0
