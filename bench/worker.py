"""The worker's speed and footprint on the local stack, with a real `reactor run` process.

Pickup latency runs from the moment an insert's commit returns to the moment the handler starts
(it stamps time.time() into its result); throughput drains 20,000 no-op jobs with one worker at
concurrency 1000; idle requests are the worker's own RPC counters from /metrics; memory is the
process's VmRSS.

    python bench/worker.py [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from reactor import migrations
from reactor.devstack import database
from reactor.devstack.stack import Stack, serve


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def worker(stack: Stack, **variables: str):
    env = {
        **os.environ,
        "SUPABASE_URL": stack.url,
        "SUPABASE_SERVICE_ROLE_KEY": stack.keys.service_role,
        "REACTOR_LOG_LEVEL": "WARNING",
        "REACTOR_HEALTH_PORT": "18080",
        **variables,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reactor.cli",
        "run",
        "bench.worker_app:app",
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    ready = f"http://127.0.0.1:{env['REACTOR_HEALTH_PORT']}/readyz"
                    if (await client.get(ready)).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def wait_done(db: asyncpg.Connection, job_type: str, n: int) -> None:
    while (
        await db.fetchval("select count(*) from jobs where job_type = $1 and status = 'completed'", job_type)
        < n
    ):
        await asyncio.sleep(0.05)


async def pickup_latencies(
    stack: Stack,
    db: asyncpg.Connection,
    realtime: bool,
    rate: int = 50,
    seconds: float = 10,
    hand_off: bool = True,
) -> list[float]:
    """Milliseconds from each insert's commit to its handler's start."""
    await db.execute("delete from jobs where job_type = 'stamp'")
    variables = {
        "REACTOR_REALTIME": "on" if realtime else "off",
        "REACTOR_HAND_OFF": "on" if hand_off else "off",
    }
    async with worker(stack, **variables):
        await asyncio.sleep(1.0)  # past "Subscribed to PostgreSQL"
        committed: dict[int, float] = {}
        for _ in range(int(rate * seconds)):
            job_id = await db.fetchval("insert into jobs (job_type) values ('stamp') returning id")
            committed[job_id] = time.time()
            await asyncio.sleep(1 / rate)
        await wait_done(db, "stamp", len(committed))
        rows = await db.fetch("select id, result from jobs where job_type = 'stamp'")
    return [(json.loads(r["result"])["started"] - committed[r["id"]]) * 1000 for r in rows]


async def pickup(
    stack: Stack,
    db: asyncpg.Connection,
    realtime: bool,
    rate: int = 50,
    seconds: float = 10,
    hand_off: bool = True,
) -> str:
    lat = await pickup_latencies(stack, db, realtime, rate, seconds, hand_off)
    return f"p50 {quantile(lat, 0.5):.1f} ms, p99 {quantile(lat, 0.99):.1f} ms over {len(lat)} jobs"


async def drain(stack: Stack, db: asyncpg.Connection, n: int = 20000) -> tuple[float, float]:
    """Jobs a second one worker drains n no-op jobs at, and its start-up in seconds."""
    await db.execute("delete from jobs where job_type = 'noop'")
    await db.execute("insert into jobs (job_type) select 'noop' from generate_series(1, $1)", n)
    started = time.monotonic()
    # As deployed (Realtime on), with the concurrency a no-op workload should get: each claim and
    # each batch of outcomes is one HTTP round trip, so bigger batches are the throughput knob
    # (the peers get theirs: pgqueuer's batch size, procrastinate's concurrency).
    async with worker(stack, REACTOR_CONCURRENCY="1000"):
        ready = time.monotonic()
        await wait_done(db, "noop", n)
        done = time.monotonic()
    return n / (done - ready), ready - started


async def throughput(stack: Stack, db: asyncpg.Connection, n: int = 20000) -> str:
    rate, start_up = await drain(stack, db, n)
    return f"{rate:.0f} jobs/s ({n} jobs in {n / rate:.1f} s, start-up {start_up:.1f} s)"


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


async def idle_and_memory(stack: Stack, db: asyncpg.Connection, idle_seconds: float = 60) -> str:
    await db.execute("delete from jobs")
    async with worker(stack, REACTOR_CONCURRENCY="100") as process, httpx.AsyncClient() as client:
        await asyncio.sleep(3.0)  # past start-up: the claims after subscribing and "Subscribed to PostgreSQL"
        before = _rpc_total((await client.get("http://127.0.0.1:18080/metrics")).text)
        await asyncio.sleep(idle_seconds)
        after = _rpc_total((await client.get("http://127.0.0.1:18080/metrics")).text)
        idle_rss = rss_mb(process.pid)
        await db.execute(
            "insert into jobs (job_type, payload) select 'sleep', '{\"seconds\": 30}'"
            " from generate_series(1, 100)"
        )
        while await db.fetchval("select count(*) from jobs where status = 'processing'") < 100:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        busy_rss = rss_mb(process.pid)
    per_minute = (after - before) * 60 / idle_seconds
    return (
        f"idle requests {per_minute:.1f}/min; RSS idle {idle_rss:.0f} MB, "
        f"with 100 jobs running {busy_rss:.0f} MB"
    )


def _rpc_total(metrics: str) -> int:
    return sum(int(float(m)) for m in re.findall(r"^reactor_rpc_calls_total\{[^}]*\} (\S+)$", metrics, re.M))


async def main(server_url: str | None) -> None:
    with database.server(server_url) as server_url:
        database_url = await database.create_database(server_url, "reactor_bench_worker")
        try:
            await database.bootstrap(database_url)
            await migrations.apply(database_url)
            async with serve(database_url, port=0) as stack:
                db = await asyncpg.connect(database_url)
                print("pickup through Realtime:", await pickup(stack, db, realtime=True), flush=True)
                print(
                    "pickup through Realtime, hand-offs off:",
                    await pickup(stack, db, realtime=True, hand_off=False),
                    flush=True,
                )
                print("pickup through polling (2 s):", await pickup(stack, db, realtime=False), flush=True)
                print("throughput:", await throughput(stack, db), flush=True)
                print(await idle_and_memory(stack, db), flush=True)
                await db.close()
        finally:
            await database.drop_database(server_url, "reactor_bench_worker")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a Postgres server to use; the bench makes its own database")
    asyncio.run(main(parser.parse_args().database_url))
