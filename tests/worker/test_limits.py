"""Limits across the fleet (sql/migrations/0012) with real worker processes: whatever the number of
workers, a rate limit's starts never exceed it in any window, and a per-user limit interleaves one
user's burst with everyone else's jobs."""

from __future__ import annotations

import signal
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta

import asyncpg
import pytest

from tests.support.worker import insert, wait_until, worker_env, worker_process

pytestmark = pytest.mark.anyio


async def fleet(workers: AsyncExitStack, stack, size: int) -> list:
    return [
        await workers.enter_async_context(
            worker_process(worker_env(stack, REACTOR_WORKER_ID=f"w{n}", REACTOR_LOG_LEVEL="warning"))
        )
        for n in range(size)
    ]


async def completed(db: asyncpg.Connection, job_type: str, n: int) -> bool:
    done = await db.fetchval(
        "select count(*) from public.jobs where job_type = $1 and status = 'completed'", job_type
    )
    return done == n


async def test_four_workers_start_a_rate_limited_type_at_most_twice_in_any_second(stack, db) -> None:
    async with AsyncExitStack() as workers:
        processes = await fleet(workers, stack, 4)
        await db.execute("insert into public.jobs (job_type) select 'paced' from generate_series(1, 12)")
        await wait_until(lambda: completed(db, "paced", 12), timeout=60)
        for process in processes:
            process.signal(signal.SIGTERM)
        assert [await process.wait() for process in processes] == [0, 0, 0, 0]
    starts = [
        r["started_at"]
        for r in await db.fetch(
            "select started_at from public.jobs where job_type = 'paced' order by started_at"
        )
    ]
    gaps = [later - earlier for earlier, later in zip(starts, starts[2:], strict=False)]
    assert min(gaps) >= timedelta(seconds=1)  # any three starts span at least a second
    # 12 starts at 2 a second take about 5.5 s; the 30 s sweep would take far longer: the ticks
    # that rate windows scheduled started them.
    assert starts[-1] - starts[0] < timedelta(seconds=25)
    limits = await db.fetchrow("select rate, per_seconds from reactor.job_limits where job_type = 'paced'")
    assert tuple(limits) == (2, 1)  # declared by the handler, held by the database


async def test_one_users_burst_does_not_hold_up_other_users(stack, db) -> None:
    burst, others = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()]
    async with AsyncExitStack() as workers:
        processes = await fleet(workers, stack, 2)
        await db.execute(
            "insert into public.jobs (job_type, user_id) select 'fair', $1 from generate_series(1, 6)", burst
        )
        for user in others:
            await insert(db, "fair", user_id=user)
        await wait_until(lambda: completed(db, "fair", 8), timeout=60)
        for process in processes:
            process.signal(signal.SIGTERM)
        for process in processes:
            await process.wait()
    rows = await db.fetch(
        "select user_id, started_at, completed_at from public.jobs where job_type = 'fair' order by started_at"
    )
    mine = [r for r in rows if r["user_id"] == burst]
    theirs = [r for r in rows if r["user_id"] != burst]
    # One of the burst at a time (0.3 s each, per_user 1): the others started before its third.
    assert max(r["started_at"] for r in theirs) < mine[2]["started_at"]
