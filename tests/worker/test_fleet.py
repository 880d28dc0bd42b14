"""Several worker processes on one queue: every job done, and any job run twice explained."""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack

import asyncpg
import pytest

from tests.support.worker import wait_until, worker_env, worker_process

pytestmark = pytest.mark.anyio

JOBS = 2000


async def test_three_workers_complete_two_thousand_jobs_and_reruns_are_only_reclaims(
    stack, db: asyncpg.Connection
) -> None:
    await db.execute(
        "insert into public.jobs (job_type, payload) select 'echo', jsonb_build_object('n', n)"
        " from generate_series(1, $1) n",
        JOBS,
    )
    async with AsyncExitStack() as workers:
        fleet = [
            await workers.enter_async_context(
                worker_process(
                    worker_env(
                        stack,
                        REACTOR_WORKER_ID=f"w{n}",
                        REACTOR_CONCURRENCY="50",
                        REACTOR_LEASE_SECONDS="10",
                        REACTOR_LOG_LEVEL="warning",
                    )
                )
            )
            for n in range(3)
        ]

        async def all_done() -> bool:
            return await db.fetchval("select count(*) from public.jobs where status = 'completed'") == JOBS

        await wait_until(all_done, timeout=180)
        for worker in fleet:
            worker.signal(signal.SIGTERM)
        codes = [await worker.wait() for worker in fleet]
    assert codes == [0, 0, 0]
    wrong = await db.fetchval(
        "select count(*) from public.jobs where result <> jsonb_build_object('echo', payload)"
    )
    reruns = await db.fetch("select id, attempts, last_error from public.jobs where attempts > 1")
    assert wrong == 0
    assert reruns == []  # no fault, so no job runs twice
    print(f"{len(reruns)} of {JOBS} jobs ran twice, each after a reclaim")
