"""What fleet-wide limits cost a claim: 10 job types, 100,000 pending jobs of 10,000 owners.

Each scenario runs on a fresh database (migrations applied, jobs inserted, vacuumed): one
connection claims batches of 100 of all 10 types with `reactor_claim_batch` and completes them,
`--claims` times, and the time of each claim call is recorded. Scenarios: no limits; a
concurrency limit on every type (high enough never to bind, so the count is all it costs); a rate
limit on every type (likewise); one running job per owner on every type (`per_user` 1, the
round-robin over owners); and the same per-owner limit with the types' jobs spread over 1,000
owners only. Medians and 95th percentiles, and each median against "no limits".

    python bench/limited_claim.py [--database-url URL] [--claims 60]

Without --database-url it uses REACTOR_TEST_DATABASE_URL, else an embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time

import asyncpg

from reactor import migrations
from reactor.devstack import database

TYPES = [f"type_{n}" for n in range(10)]
JOBS = 100_000
BATCH = 100
ENQUEUE = """
insert into public.jobs (job_type, user_id)
select 'type_' || (n % 10), ('00000000-0000-4000-8000-' || lpad((n % $1)::text, 12, '0'))::uuid
from generate_series(1, $2) n
"""
CLAIM = "select public.reactor_claim_batch('jobs', 'bench', $1, $2, 60, null)"
COMPLETE = "select public.reactor_complete('jobs', $1)"
SCENARIOS = {
    "no limits": (None, 10_000),
    "concurrency 1,000,000 on each type": ({"concurrency": 1_000_000}, 10_000),
    "rate 10,000/s on each type": ({"rate": 10_000, "per_seconds": 1}, 10_000),
    "per_user 1 on each type, 10,000 owners": ({"per_user": 1}, 10_000),
    "per_user 1 on each type, 1,000 owners": ({"per_user": 1}, 1_000),
}


async def scenario(server_url: str, limits: dict | None, owners: int, claims: int) -> list[float]:
    name = "reactor_bench_limited_claim"
    await database.drop_database(server_url, name)
    url = await database.create_database(server_url, name)
    try:
        await database.bootstrap(url)
        await migrations.apply(url)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(ENQUEUE, owners, JOBS)
            for job_type in TYPES if limits else []:
                await conn.execute(
                    "select public.reactor_set_limits('jobs', $1, $2)", job_type, json.dumps(limits)
                )
            await conn.execute("vacuum analyze public.jobs")
            times = []
            for _ in range(claims):
                start = time.perf_counter()
                claimed = json.loads(await conn.fetchval(CLAIM, TYPES, BATCH))
                times.append(time.perf_counter() - start)
                assert len(claimed) == BATCH, f"claimed {len(claimed)} of {BATCH}"
                items = [{"id": j["id"], "lease_token": j["lease_token"]} for j in claimed]
                await conn.fetchval(COMPLETE, json.dumps(items))
            return times
        finally:
            await conn.close()
    finally:
        await database.drop_database(server_url, name)


async def main(args: argparse.Namespace, server_url: str) -> None:
    conn = await asyncpg.connect(server_url)
    version = await conn.fetchval("show server_version")
    await conn.close()
    print(
        f"PostgreSQL {version}, Python {platform.python_version()}, {os.cpu_count()} cores; "
        f"{JOBS:,} pending jobs of {len(TYPES)} types, claims of {BATCH}, {args.claims} claims a scenario"
    )
    print("| limits | claim p50 | claim p95 | p50 vs no limits |\n| --- | ---: | ---: | ---: |")
    base = None
    for label, (limits, owners) in SCENARIOS.items():
        times = sorted(await scenario(server_url, limits, owners, args.claims))
        p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
        base = base or p50
        print(f"| {label} | {p50 * 1000:.1f} ms | {p95 * 1000:.1f} ms | {p50 / base:.1f}x |")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("REACTOR_TEST_DATABASE_URL"))
    parser.add_argument("--claims", type=int, default=60)
    args = parser.parse_args()
    with database.server(args.database_url) as url:
        asyncio.run(main(args, url))


if __name__ == "__main__":
    cli()
