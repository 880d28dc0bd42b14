"""Schedules fired by real `reactor run` processes, killed and restarted around scheduled times:
exactly one job per time, every time caught up after an outage shorter than the catch-up window,
and the times of a longer one skipped (tests.worker.apps:scheduled)."""

from __future__ import annotations

import signal
import time
from contextlib import AsyncExitStack
from datetime import datetime, timedelta

import anyio
import asyncpg
import pytest

from tests.support.worker import WorkerProcess, wait_until, worker_env, worker_process

pytestmark = pytest.mark.anyio


async def run_ats(db: asyncpg.Connection, job_type: str) -> list[datetime]:
    return [
        r["run_at"] for r in await db.fetch("select run_at from public.jobs where job_type = $1", job_type)
    ]


async def just_before_a_second() -> None:
    """Sleep until 50 ms before the next whole second, when the schedules' next time falls."""
    await anyio.sleep((0.95 - time.time() % 1) % 1)


def seconds_between(first: datetime, last: datetime) -> set[datetime]:
    return {first + timedelta(seconds=n) for n in range(int((last - first).total_seconds()) + 1)}


async def test_workers_killed_and_restarted_around_scheduled_times_enqueue_one_job_per_time(stack, db):
    async with AsyncExitStack() as fleet:

        async def start(name: str) -> WorkerProcess:
            env = worker_env(stack, REACTOR_WORKER_ID=name)
            return await fleet.enter_async_context(worker_process(env, app="tests.worker.apps:scheduled"))

        async def covered(job_type: str, count: int) -> bool:
            return len(await run_ats(db, job_type)) >= count

        first = [await start(f"first-{n}") for n in range(3)]
        await wait_until(lambda: covered("tick", 3))
        # Two of three die just before a scheduled time, and a replacement joins just after it.
        await just_before_a_second()
        for worker in first[:2]:
            worker.signal(signal.SIGKILL)
        await anyio.sleep(0.1)
        replacement = await start("replacement")
        await anyio.sleep(2)
        # Then the whole fleet dies, just before a time, and is down for five seconds.
        await just_before_a_second()
        for worker in (first[2], replacement):
            worker.signal(signal.SIGKILL)
        down = max(await run_ats(db, "tick"))
        await anyio.sleep(5)
        back = [await start(f"back-{n}") for n in range(2)]
        caught_up = len(await run_ats(db, "tick")) + 6
        await wait_until(lambda: covered("tick", caught_up))
        # One of the two dies just after a time; the other carries on alone.
        await just_before_a_second()
        await anyio.sleep(0.1)
        back[0].signal(signal.SIGKILL)
        await anyio.sleep(2)
        back[1].signal(signal.SIGTERM)
        assert await back[1].wait() == 0

    ticks, tocks = await run_ats(db, "tick"), await run_ats(db, "tock")
    # Exactly one job per time, whichever of the workers enqueued it.
    assert len(ticks) == len(set(ticks)) and len(tocks) == len(set(tocks))
    enqueuers = [w for w in [*first, replacement, *back] if "schedule every-second: enqueued" in w.output]
    assert len(enqueuers) >= 3, "the fleet's workers took turns"
    # The outage was shorter than tick's catch-up window: not one second is missing.
    assert set(ticks) == seconds_between(min(ticks), max(ticks))
    # tock remembers two seconds only: the times of the outage more than 2 s old when the fleet
    # came back were skipped, and the rest caught up.
    came_back = await db.fetchval(
        "select min(created_at) from public.jobs where job_type = 'tick' and run_at > $1", down
    )
    missing = seconds_between(min(tocks), max(tocks)) - set(tocks)
    assert missing, "an outage longer than the catch-up window skips times"
    assert all(down < t <= came_back - timedelta(seconds=2) for t in missing), (
        down,
        came_back,
        sorted(missing),
    )
    caught_up = {t for t in tocks if down < t <= came_back}
    assert caught_up and all(t > came_back - timedelta(seconds=2.5) for t in caught_up)
    statuses = await db.fetch("select status, count(*) from public.jobs group by status")
    assert {r["status"] for r in statuses} <= {"pending", "processing", "completed"}
