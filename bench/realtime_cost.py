"""What a fleet of workers costs in Realtime messages on the hosted profile, and its pickup there.

Runs the local stack as hosted Supabase on the Pro plan (500 messages a second, polled delivery,
a 20 ms round trip on every request and frame) and, for 1, 4 and 16 real `reactor run` processes:
Realtime messages delivered per idle worker-minute (30 s idle), messages per job and pickup
p50/p99 (200 jobs inserted at 20 a second, each stamped when its handler starts), and at 400
inserts a second with 16 workers whether the project's quota was reached. With `--before DIR`, a
checkout of an earlier version (`git worktree add DIR <commit>`), the same runs are made with its
workers and its migrations, side by side in one run.

    python bench/realtime_cost.py [--database-url URL] [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx

from reactor.devstack import database
from reactor.devstack.profile import Profile
from reactor.devstack.stack import Stack, serve

HERE = Path(__file__).resolve().parent.parent
SIZES = (1, 4, 16)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def migrate(checkout: Path, database_url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "reactor.cli", "migrate", "--database-url", database_url],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        check=True,
        capture_output=True,
    )


@contextlib.asynccontextmanager
async def workers(checkout: Path, stack: Stack, n: int) -> AsyncIterator[None]:
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "SUPABASE_URL": stack.url,
        "SUPABASE_SERVICE_ROLE_KEY": stack.keys.service_role,
        "REACTOR_LOG_LEVEL": "ERROR",
    }
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reactor.cli",
            "run",
            "bench.worker_app:app",
            env={**env, "REACTOR_HEALTH_PORT": str(18100 + i), "REACTOR_WORKER_ID": f"bench-{i}"},
            cwd=checkout,
        )
        for i in range(n)
    ]
    try:
        async with httpx.AsyncClient() as client:
            for i in range(n):
                for _ in range(600):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://127.0.0.1:{18100 + i}/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
        await asyncio.sleep(5.0)  # past "Subscribed to PostgreSQL" and the first standby offers
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            await process.wait()


async def insert_at(db: asyncpg.Connection, rate: int, seconds: float) -> dict[int, float]:
    """Insert `stamp` jobs at `rate` a second, in rows of a statement each 50 ms; their commit times."""
    committed: dict[int, float] = {}
    per_step = max(1, round(rate * 0.05))
    start = time.monotonic()
    for step in range(int(seconds / 0.05)):
        ids = await db.fetch(
            "insert into jobs (job_type) select 'stamp' from generate_series(1, $1) returning id", per_step
        )
        now = time.time()
        committed.update((r["id"], now) for r in ids)
        await asyncio.sleep(max(0.0, start + (step + 1) * 0.05 - time.monotonic()))
    return committed


async def wait_done(db: asyncpg.Connection, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while await db.fetchval("select count(*) from jobs where status = 'completed'") < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} jobs completed within {timeout} s")
        await asyncio.sleep(0.1)


async def fleet_run(server_url: str, checkout: Path, n: int, name: str) -> dict[str, float]:
    database_url = await database.create_database(server_url, name)
    try:
        await database.bootstrap(database_url)
        migrate(checkout, database_url)
        profile = Profile.hosted("pro", round_trip_ms=20.0)
        async with serve(database_url, port=0, profile=profile) as stack, workers(checkout, stack, n):
            db = await asyncpg.connect(database_url)
            counters = stack.realtime.counters
            before, idle = counters.messages, 30.0
            await asyncio.sleep(idle)
            per_idle_minute = (counters.messages - before) / n * 60 / idle
            before = counters.messages
            committed = await insert_at(db, 20, 10)
            await wait_done(db, len(committed))
            per_job = (counters.messages - before) / len(committed)
            rows = await db.fetch("select id, result from jobs where job_type = 'stamp'")
            pickup = [(json.loads(r["result"])["started"] - committed[r["id"]]) * 1000 for r in rows]
            result = {
                "idle": per_idle_minute,
                "per_job": per_job,
                "p50": quantile(pickup, 0.5),
                "p99": quantile(pickup, 0.99),
            }
            if n == max(SIZES):
                await db.execute("delete from jobs")
                before = counters.messages
                committed = await insert_at(db, 400, 5)
                await wait_done(db, len(committed))
                result["burst_per_job"] = (counters.messages - before) / len(committed)
            result["quota_reached"] = counters.quota_reached
            result["dropped"] = counters.dropped
            await db.close()
            return result
    finally:
        await database.drop_database(server_url, name)


async def main(server_url: str | None, before: Path | None) -> None:
    versions = {"this version": HERE, **({f"before ({before.name})": before} if before else {})}
    with database.server(server_url) as server_url:
        for label, checkout in versions.items():
            for n in SIZES:
                r = await fleet_run(server_url, checkout, n, f"reactor_bench_rt_{n}")
                line = (
                    f"{label}, {n} worker(s): {r['idle']:.1f} messages per idle worker-minute, "
                    f"{r['per_job']:.2f} per job, pickup p50 {r['p50']:.0f} ms p99 {r['p99']:.0f} ms"
                )
                if "burst_per_job" in r:
                    line += f"; at 400 inserts/s {r['burst_per_job']:.2f} per job"
                line += f"; quota reached {r['quota_reached']} time(s), {r['dropped']} changes dropped"
                print(line, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a Postgres server to use; the bench makes its own databases")
    parser.add_argument("--before", type=Path, help="a checkout of an earlier version, run side by side")
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.before))
