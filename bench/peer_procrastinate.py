"""procrastinate's side of bench/peers.py: its schema, deferring, and a worker process.

    python bench/peer_procrastinate.py DATABASE_URL STAMPS COUNTS

The worker runs one `noop` task that appends "job id, time.time()" to STAMPS, with procrastinate's
LISTEN/NOTIFY pickup and concurrency 20 (its knob for throughput: each sub-worker fetches one job
per query), and writes how many times it has called procrastinate's fetch_job query to COUNTS
every half second.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import asyncpg
import procrastinate

CONCURRENCY = 20


def make_app(url: str, stamps: Path | None = None) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    out = stamps.open("a", buffering=1) if stamps else None

    @app.task(name="noop", pass_context=True)
    async def noop(context) -> None:
        if out:
            out.write(f"{context.job.id},{time.time()}\n")

    return app


async def install(url: str) -> None:
    app = make_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def enqueue(conn: asyncpg.Connection, n: int) -> list[int]:
    """Defer n no-op jobs in one statement, as procrastinate's defer does row by row; their ids."""
    rows = await conn.fetch(
        "select unnest(procrastinate_defer_jobs_v1((select array_agg("
        "row('default', 'noop', 0, null, null, '{}'::jsonb, null)::procrastinate_job_to_defer_v1)"
        " from generate_series(1, $1)))) as id",
        n,
    )
    return [row["id"] for row in rows]


async def remaining(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("select count(*) from procrastinate_jobs where status <> 'succeeded'")


async def work(url: str, stamps: Path, counts: Path) -> None:
    app = make_app(url, stamps)
    fetches = 0
    async with app.open_async():
        original = app.job_manager.fetch_job

        async def counted(*args, **kwargs):
            nonlocal fetches
            fetches += 1
            return await original(*args, **kwargs)

        app.job_manager.fetch_job = counted

        async def report() -> None:
            while True:
                counts.write_text(str(fetches))
                await asyncio.sleep(0.5)

        reporter = asyncio.create_task(report())
        try:
            await app.run_worker_async(concurrency=CONCURRENCY, listen_notify=True, wait=True)
        finally:
            reporter.cancel()
            counts.write_text(str(fetches))


if __name__ == "__main__":
    asyncio.run(work(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
