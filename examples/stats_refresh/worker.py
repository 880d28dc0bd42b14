"""Stats refresh: every quarter of an hour, ten database functions run side by side, then the cache
is told to drop them.

The schedule is declared beside the handler (`@app.cron`): the database enqueues one job per time
however many workers run, where the workload this comes from needed a Vercel cron with a bearer
token. The worker has no database connection: each function is a PostgREST RPC with the service
key, ten in flight at once. The cache invalidation is a completion hook: it runs once the job's
result is recorded and is tried 3 times with a short backoff; a cache that stays down costs a log
line, never a rerun of the refreshes.

    insert into jobs (job_type) values ('stats_refresh');   -- or wait for the quarter hour
"""

from __future__ import annotations

import os

import anyio
import httpx

from examples.supabase_api import supabase
from reactor import Job, Reactor
from reactor.hooks import Finished
from reactor.retry import RetryPolicy

CACHE_URL = os.environ.get("CACHE_URL", "http://127.0.0.1:8702")
STATS = [f"refresh_stat_{n}" for n in range(1, 11)]

app = Reactor()


@app.cron("*/15 * * * *")
@app.handler("stats_refresh", timeout=120)
async def stats_refresh(job: Job) -> dict:
    client = await supabase()
    values: dict[str, float] = {}

    async def refresh(name: str) -> None:
        values[name] = float((await client.rpc(name, {}).execute()).data)

    async with anyio.create_task_group() as group:
        for name in STATS:
            group.start_soon(refresh, name)
    return {"refreshed": values}


@app.on_finished("stats_refresh", retries=2, retry=RetryPolicy(base_seconds=0.2, cap_seconds=1))
async def invalidate(job: Job, finished: Finished) -> None:
    """Tell the cache to drop what the job refreshed; raising tries again, 3 tries in all."""
    if finished.kind != "completed":
        return
    async with httpx.AsyncClient(base_url=CACHE_URL, timeout=10) as client:
        keys = sorted(finished.result["refreshed"])
        (await client.post("/invalidate", json={"keys": keys})).raise_for_status()
