"""The local stack's speed: commit-to-frame latency of postgres_changes, and REST RPC round trips.

A supabase-py client subscribes to INSERTs on public.jobs; rows are committed over asyncpg at a
steady rate; latency runs from the moment the insert's commit returns to the moment the
client's callback runs. Then supabase-py calls an RPC (`reactor_claim` on an empty queue, the
call an idle worker makes) as fast as it can, sequentially and from 4 concurrent clients.

    python bench/devstack_latency.py [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg
from supabase import acreate_client

from reactor import migrations
from reactor.devstack import database
from reactor.devstack.stack import Stack, serve


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(
    stack: Stack, db: asyncpg.Connection, rate: int, seconds: float
) -> tuple[float, float, int, int]:
    sb = await acreate_client(stack.url, stack.keys.service_role)
    arrived: dict[int, float] = {}
    live = asyncio.Event()
    channel = sb.channel(f"bench-{rate}")
    channel.on_postgres_changes(
        "INSERT",
        lambda p: arrived.setdefault(p["data"]["record"]["id"], time.perf_counter()),
        table="jobs",
        schema="public",
    )
    channel.on_system(lambda _: live.set())
    await channel.subscribe()
    await asyncio.wait_for(live.wait(), 10)
    committed: dict[int, float] = {}
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        job_id = await db.fetchval("insert into public.jobs (job_type) values ('bench') returning id")
        committed[job_id] = time.perf_counter()
    await asyncio.sleep(1.0)
    await sb.realtime.close()
    samples = [(arrived[j] - t) * 1000 for j, t in committed.items() if j in arrived]
    return quantile(samples, 0.5), quantile(samples, 0.99), len(samples), len(committed)


async def rpc_rate(stack: Stack, clients: int, seconds: float) -> float:
    async def loop() -> int:
        sb = await acreate_client(stack.url, stack.keys.service_role)
        calls, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            await sb.rpc(
                "reactor_claim",
                {"p_table": "jobs", "p_worker": "bench", "p_job_types": ["none"], "p_limit": 10},
            ).execute()
            calls += 1
        return calls

    return sum(await asyncio.gather(*(loop() for _ in range(clients)))) / seconds


async def main(server_url: str) -> None:
    url = await database.create_database(server_url, "reactor_bench_devstack")
    try:
        await database.bootstrap(url)
        await migrations.apply(url)
        db = await asyncpg.connect(url)
        version = await db.fetchval("show server_version")
        async with serve(url, port=0) as stack:
            print(f"PostgreSQL {version}, {os.cpu_count()} cores\n")
            print("| inserts/s | p50 ms | p99 ms | delivered |\n|---:|---:|---:|---:|")
            for rate, seconds in ((50, 10), (500, 6)):
                p50, p99, got, sent = await latency(stack, db, rate, seconds)
                print(f"| {rate} | {p50:.2f} | {p99:.2f} | {got}/{sent} |")
            print("\n| RPC clients | calls/s |\n|---:|---:|")
            for clients in (1, 4):
                print(f"| {clients} | {await rpc_rate(stack, clients, 5):,.0f} |")
        await db.close()
    finally:
        await database.drop_database(server_url, "reactor_bench_devstack")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("REACTOR_TEST_DATABASE_URL"))
    args = parser.parse_args()
    with database.server(args.database_url) as url:
        asyncio.run(main(url))


if __name__ == "__main__":
    cli()
