"""examples/stats_refresh: a schedule, ten functions side by side, then a completion hook that
invalidates the cache on its third try."""

from __future__ import annotations

import json
import signal

import asyncpg
import pytest

from examples.fake_server import serving
from examples.stats_refresh.fake_api import Cache
from tests.support.examples import apply_schema, example_worker
from tests.support.worker import insert, status_is, wait_until

pytestmark = pytest.mark.anyio


async def test_ten_functions_run_side_by_side_then_the_cache_is_invalidated_on_the_third_try(
    stack,
    db: asyncpg.Connection,
) -> None:
    await apply_schema(db, "stats_refresh")
    cache = Cache(failures=2)
    async with serving(cache.app()) as url, example_worker(stack, "stats_refresh", CACHE_URL=url) as worker:
        job_id = await insert(db, "stats_refresh")
        done = await status_is(db, job_id, "completed", "failed", timeout=60)
        await wait_until(lambda: _true(len(cache.calls) == 3))  # the hook, after the outcome
        schedules = await db.fetch("select name, cron from reactor.schedules")
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert (done["status"], done["attempts"]) == ("completed", 1), done["last_error"]
    assert sorted(json.loads(done["result"])["refreshed"]) == sorted(
        f"refresh_stat_{n}" for n in range(1, 11)
    )
    assert cache.calls[-1] == sorted(f"refresh_stat_{n}" for n in range(1, 11))
    assert "hook" not in worker.output  # the third try succeeded: nothing logged as given up
    assert [tuple(s) for s in schedules] == [("stats_refresh", "*/15 * * * *")]
    stats = await db.fetch("select name, value, started_at, refreshed_at from public.example_stats")
    assert len(stats) == 10
    # Side by side: the latest start comes before the earliest end, so all ten overlapped.
    assert max(s["started_at"] for s in stats) < min(s["refreshed_at"] for s in stats)


async def test_the_refresh_functions_are_closed_to_the_frontends_roles(db: asyncpg.Connection) -> None:
    await apply_schema(db, "stats_refresh")
    for role in ("anon", "authenticated"):
        assert not await db.fetchval(
            "select has_function_privilege($1, 'public.refresh_stat_1()', 'execute')", role
        )


async def _true(value: bool) -> bool:
    return value
