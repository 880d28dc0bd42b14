"""How long each of the worker's and operator's RPCs takes on a job table of one million finished
jobs, against hosted Supabase's 8 s statement timeout (docs/hosted-supabase.md).

Fills `jobs` with 1,000,000 completed jobs (finished over the last 30 days) and 1,000 pending
ones, then times each call through the database, three times each:

    python bench/big_table.py [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg

from reactor import migrations
from reactor.devstack import database

CALLS = {
    "reactor_stats": "select public.reactor_stats('jobs')",
    "reactor_tick (reap, claim 10, next due, stats)": (
        "select public.reactor_tick('jobs', 'bench', array['t'], 10, 60, true, false, null, 0)"
    ),
    "reactor_reap": "select public.reactor_reap('jobs')",
    "reactor_claim_batch (100)": "select public.reactor_claim_batch('jobs', 'bench', array['t'], 100, 60, 0)",
    "reactor_prune (older than 7 days, 10,000 a call)": "select public.reactor_prune('jobs', 604800)",
    "reactor_retry (failed, 1,000 a call)": "select public.reactor_retry('jobs', null, null, 1000)",
}


async def fill(db: asyncpg.Connection, finished: int, pending: int) -> None:
    await db.execute(
        """
        insert into public.jobs (job_type, status, attempts, completed_at, created_at, result)
        select 't', case when g % 100 = 0 then 'failed' else 'completed' end, 1,
               now() - (g % 2592000) * interval '1 second', now() - interval '31 days', '{"ok": true}'
        from generate_series(1, $1) g
        """,
        finished,
    )
    await db.execute("insert into public.jobs (job_type) select 't' from generate_series(1, $1)", pending)
    await db.execute("analyze public.jobs")


async def main(server_url: str | None) -> None:
    with database.server(server_url) as server_url:
        database_url = await database.create_database(server_url, "reactor_bench_big")
        try:
            await database.bootstrap(database_url)
            await migrations.apply(database_url)
            db = await asyncpg.connect(database_url)
            started = time.monotonic()
            await fill(db, 1_000_000, 1_000)
            print(f"filled 1,001,000 rows in {time.monotonic() - started:.0f} s", flush=True)
            for name, sql in CALLS.items():
                times = []
                for _ in range(3):  # prune, claim and retry change a little each time: 1 % of the rows
                    began = time.perf_counter()
                    await db.fetchval(sql)
                    times.append((time.perf_counter() - began) * 1000)
                print(f"{name}: best {min(times):.0f} ms, worst {max(times):.0f} ms", flush=True)
            await db.close()
        finally:
            await database.drop_database(server_url, "reactor_bench_big")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a Postgres server to use; the bench makes its own database")
    asyncio.run(main(parser.parse_args().database_url))
