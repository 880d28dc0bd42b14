"""Stats refresh: ten database functions run side by side, then the cache is told to drop them.

The worker has no database connection: each function is a PostgREST RPC with the service key,
ten in flight at once. The cache-invalidation call is retried up to 3 times with a short backoff;
if it still fails, the job fails this attempt and reactor retries it later with its own backoff
(the refreshes are idempotent, so running them again is harmless).

    insert into jobs (job_type) values ('stats_refresh');
"""

from __future__ import annotations

import os

import anyio
import httpx

from examples.supabase_api import supabase
from reactor import Job, Reactor

CACHE_URL = os.environ.get("CACHE_URL", "http://127.0.0.1:8702")
STATS = [f"refresh_stat_{n}" for n in range(1, 11)]
INVALIDATION_ATTEMPTS = 3

app = Reactor()


async def invalidate(keys: list[str]) -> int:
    """Tell the cache to drop `keys`; the number of attempts it took."""
    async with httpx.AsyncClient(base_url=CACHE_URL, timeout=10) as client:
        for attempt in range(1, INVALIDATION_ATTEMPTS + 1):
            try:
                (await client.post("/invalidate", json={"keys": keys})).raise_for_status()
                return attempt
            except httpx.HTTPError:
                if attempt == INVALIDATION_ATTEMPTS:
                    raise
                await anyio.sleep(0.2 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


@app.handler("stats_refresh", timeout=120)
async def stats_refresh(job: Job) -> dict:
    client = await supabase()
    values: dict[str, float] = {}

    async def refresh(name: str) -> None:
        values[name] = float((await client.rpc(name, {}).execute()).data)

    async with anyio.create_task_group() as group:
        for name in STATS:
            group.start_soon(refresh, name)
    await job.set_progress(90, "statistics refreshed; invalidating the cache")
    attempts = await invalidate(sorted(values))
    return {"refreshed": values, "invalidation_attempts": attempts}
