"""Claim-and-complete throughput of the SQL contract, called directly over asyncpg.

This is the ceiling for the worker's HTTP path: no PostgREST, no handler, only
`reactor_claim` + `reactor_complete` in a loop, one connection per worker.

    python bench/sql_claim_complete.py [--database-url URL] [--jobs N] [--workers W]

Without --database-url it uses REACTOR_TEST_DATABASE_URL, else an embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time

import asyncpg

from reactor import migrations
from reactor.devstack import database

CLAIM = "select id, lease_token from public.reactor_claim('jobs', $1, array['noop'], $2, 60)"
COMPLETE = "select public.reactor_complete('jobs', $1)"
ENQUEUE = "insert into public.jobs (job_type) select 'noop' from generate_series(1, $1)"


async def drain(url: str, worker: str, batch: int) -> int:
    conn = await asyncpg.connect(url)
    done = 0
    try:
        while jobs := await conn.fetch(CLAIM, worker, batch):
            items = [{"id": j["id"], "lease_token": str(j["lease_token"]), "result": None} for j in jobs]
            await conn.fetchval(COMPLETE, json.dumps(items))
            done += len(jobs)
    finally:
        await conn.close()
    return done


async def run_one(server_url: str, batch: int, jobs: int, workers: int) -> float:
    name = f"reactor_bench_{batch}_{workers}"
    url = await database.create_database(server_url, name)
    try:
        await database.bootstrap(url)
        await migrations.apply(url)
        conn = await asyncpg.connect(url)
        await conn.execute(ENQUEUE, jobs)
        await conn.execute("vacuum analyze public.jobs")
        await conn.close()
        start = time.perf_counter()
        done = await asyncio.gather(*(drain(url, f"w{i}", batch) for i in range(workers)))
        elapsed = time.perf_counter() - start
        assert sum(done) == jobs, f"drained {sum(done)} of {jobs}"
        return jobs / elapsed
    finally:
        await database.drop_database(server_url, name)


async def main(args: argparse.Namespace, server_url: str) -> None:
    conn = await asyncpg.connect(server_url)
    version = await conn.fetchval("show server_version")
    await conn.close()
    print(
        f"PostgreSQL {version}, Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"{args.jobs} no-op jobs, {args.workers} connection(s)"
    )
    print("| batch | jobs/s | vs batch 1 |\n|---:|---:|---:|")
    base = None
    for batch in (1, 10, 100):
        rate = await run_one(server_url, batch, args.jobs, args.workers)
        base = base or rate
        print(f"| {batch} | {rate:,.0f} | {rate / base:.1f}x |")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("REACTOR_TEST_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with database.server(args.database_url) as url:
        asyncio.run(main(args, url))


if __name__ == "__main__":
    cli()
