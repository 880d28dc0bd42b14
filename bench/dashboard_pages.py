"""How long the dashboard's pages take with 1,000,000 jobs in the table.

Fills `public.jobs` with a million rows shaped like a busy project's (mostly completed over the
last week, some failed, pending, cancelled and running, a few thousand finished in the last
quarter hour), starts the local stack and the dashboard in this process, and times each page as a
browser loads it (its HTML, over HTTP), and the reads behind them over the API. Medians and the
slowest of `--rounds` loads, after one warm-up.

    python bench/dashboard_pages.py [--database-url URL] [--rounds 10]

Without --database-url it uses REACTOR_TEST_DATABASE_URL, else an embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import httpx

from reactor import migrations
from reactor.dashboard.server import Dashboard
from reactor.dashboard.settings import Settings
from reactor.devstack import database
from reactor.devstack.stack import serve

NAME = "reactor_bench_dashboard"
ROWS = 1_000_000

FILL = """
insert into public.jobs (job_type, payload, status, attempts, run_at, created_at, started_at, completed_at,
                         result, last_error, locked_by, lease_expires_at, lease_token)
select t.job_type, jsonb_build_object('n', g), s.status, 1, c.at, c.at,
       case when s.status in ('completed', 'failed', 'processing') then c.at + interval '80 ms' end,
       case when s.status in ('completed', 'failed', 'cancelled') then c.at + interval '1 s' end,
       case when s.status = 'completed' then '{"ok": true}'::jsonb end,
       case when s.status = 'failed' then 'PermanentError: upstream ' || (g % 7) || ' refused' end,
       case when s.status = 'processing' then 'worker-' || (g % 5) end,
       case when s.status = 'processing' then now() + interval '1 minute' end,
       case when s.status = 'processing' then gen_random_uuid() end
from generate_series(1, $1) g
cross join lateral (select (array['send_email', 'resize_image', 'charge', 'report'])[1 + g % 4] as job_type) t
cross join lateral (select case
    when g > $1 - 200 then 'processing'
    when g % 100 < 5 then 'failed'
    when g % 100 < 9 then 'pending'
    when g % 100 < 10 then 'cancelled'
    else 'completed' end as status) s
cross join lateral (select case
    when g > $1 - 5000 then now() - (($1 - g) * interval '150 ms')
    else now() - interval '7 days' + g * interval '600 ms' end as at) c
"""


async def timed(rounds: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    await call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


async def main(server_url: str, rounds: int) -> None:
    url = await database.create_database(server_url, NAME)
    try:
        await database.bootstrap(url)
        await migrations.apply(url)
        db = await asyncpg.connect(url)
        start = time.perf_counter()
        await db.execute("alter table public.jobs disable trigger user")
        await db.execute(FILL, ROWS)
        await db.execute("alter table public.jobs enable trigger user")
        await db.execute("vacuum analyze public.jobs")
        failed_id = await db.fetchval("select max(id) from public.jobs where status = 'failed'")
        print(f"{ROWS:,} rows in {time.perf_counter() - start:.0f} s")
        await db.close()
        async with serve(url, port=0) as stack:
            dash = Dashboard(Settings(stack.url, stack.keys.service_role, ("jobs",), port=0))
            async with anyio.create_task_group() as group, httpx.AsyncClient(timeout=60) as client:
                await group.start(dash.serve)
                project = dash.project

                def page(path: str) -> Callable[[], Awaitable[object]]:
                    async def load() -> object:
                        response = await client.get(dash.url + path)
                        response.raise_for_status()
                        return response

                    return load

                since = datetime.now(UTC) - timedelta(minutes=15)
                cases = {
                    "overview page (/)": page("/"),
                    "one overview refresh (what each live update costs)": dash.overview.read,
                    "  reactor_overview (what the overview reads)": lambda: project.stats("jobs"),
                    "  reactor_stats (the full count, for comparison)": lambda: project.store.stats("jobs"),
                    "  running jobs": lambda: project.running("jobs", 1000),
                    "  outcomes of the last 15 minutes": lambda: project.finished_since("jobs", since, 1000),
                    "failed jobs, first page (/failed)": page("/failed"),
                    "failed jobs, page 20": page("/failed?offset=950"),
                    "failed jobs filtered by type and error": page("/failed?type=charge&error=upstream+3"),
                    "bulk confirmation, counting matches": page("/failed/confirm?action=retry&type=charge"),
                    "a job's page": page(f"/jobs/jobs/{failed_id}"),
                }
                print(f"{'what':55} {'median ms':>10} {'max ms':>8}")
                for name, call in cases.items():
                    median, slowest = await timed(rounds, call)
                    print(f"{name:55} {median:10.1f} {slowest:8.1f}")
                group.cancel_scope.cancel()
    finally:
        await database.drop_database(server_url, NAME)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("REACTOR_TEST_DATABASE_URL"))
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with database.server(args.database_url) as server:
        asyncio.run(main(server, args.rounds))
