"""What reactor costs in Realtime messages (sql/migrations/0010), on the local stack's hosted
profile, which counts and limits every copy it delivers as hosted Supabase does: one message per
job however many workers run, and never more than reactor's Realtime budget allows."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import asyncpg
import pytest
from loguru import logger

from reactor import Reactor
from reactor.devstack.profile import Profile
from reactor.devstack.stack import Stack, serve
from tests.support.worker import (
    NO_POLLING,
    echo_app,
    running,
    status_is,
    subscribed,
    wait_until,
    worker_config,
)

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def hosted(database_url: str) -> AsyncIterator[Stack]:
    async with serve(database_url, port=0, profile=Profile.hosted("pro", round_trip_ms=0.0)) as stack:
        yield stack


@asynccontextmanager
async def fleet(stack: Stack, db: asyncpg.Connection, size: int, **config) -> AsyncIterator[list[Reactor]]:
    """`size` workers in this process, each subscribed and standing by."""
    async with AsyncExitStack() as workers:
        apps = [echo_app() for _ in range(size)]
        for app in apps:
            await workers.enter_async_context(running(app, worker_config(stack, **{**NO_POLLING, **config})))
        for app in apps:
            await subscribed(app)

        async def all_standing_by() -> bool:
            return await db.fetchval("select count(*) from reactor.standby where slots > 0") == size

        await wait_until(all_standing_by)
        yield apps


async def insert_each(db: asyncpg.Connection, n: int) -> list[int]:
    return [
        await db.fetchval("insert into public.jobs (job_type, payload) values ('echo', '{}') returning id")
        for _ in range(n)
    ]


async def test_a_job_costs_one_realtime_message_with_one_worker_or_four(database_url, db) -> None:
    # The budget counts a second's inserts: the two rounds may fall in one second. Not the subject here.
    await db.execute("update reactor.realtime_budget set messages_per_second = 10000")
    async with hosted(database_url) as stack:
        for size in (1, 4):
            async with fleet(stack, db, size, concurrency=2) as apps:
                before = stack.realtime.counters.messages
                ids = await insert_each(db, 40)
                for job_id in ids:
                    await status_is(db, job_id, "completed")
                # A job can finish before its insert's event is delivered: hosted delivery is
                # polled, and a worker whose slot frees claims the backlog. Every event comes.
                await wait_until(lambda: _true(stack.realtime.counters.messages - before >= 40))  # noqa: B023
                probes = sum(app.metrics.events["realtime_probes_heard"] for app in apps)
                messages = stack.realtime.counters.messages - before
            assert 40 <= messages <= 40 + probes, f"{size} worker(s): {messages} messages for 40 jobs"
        assert stack.realtime.counters.dropped == stack.realtime.counters.broadcasts_dropped == 0


async def test_past_the_budget_jobs_still_start_and_the_worker_ticks_fast_and_says_so(
    database_url, db
) -> None:
    await db.execute("update reactor.realtime_budget set messages_per_second = 2")
    warnings: list[str] = []
    ticks = {"poll_fast_seconds": 0.5, "poll_slow_seconds": 3.0}
    async with hosted(database_url) as stack, fleet(stack, db, 1, concurrency=50, **ticks) as [app]:
        sink = logger.add(warnings.append, level="WARNING", format="{message}")
        try:
            before = stack.realtime.counters.messages
            burst = (
                "insert into public.jobs (job_type) select 'echo' from generate_series(1, 30) returning id"
            )
            # The budget is per second of the database's clock (this machine's): start the burst
            # just after a second begins, so that it does not straddle two of them under load.
            await anyio.sleep(1.02 - time.time() % 1)
            for job in await db.fetch(burst):
                await status_is(db, job["id"], "completed")
            messages = stack.realtime.counters.messages - before
            await wait_until(lambda: _withheld_seen(app))
        finally:
            logger.remove(sink)
        assert not app.worker.feed.dependable()  # ticks fast while the budget is reached
    assert messages <= 2 + 1 + 2, messages  # the budget, the herald past it, and a second's turn
    assert app.metrics.events["realtime_withheld"] == 30 - messages
    assert any(w.startswith("Realtime budget reached") for w in warnings), warnings


async def _withheld_seen(app: Reactor) -> bool:
    return app.metrics.events["realtime_withheld"] > 0


async def _true(value: bool) -> bool:
    return value
