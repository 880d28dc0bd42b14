"""reactor and pgqueuer side by side at a hosted project's distance, in one run.

The local stack runs as hosted Supabase on the Pro plan (docs/hosted-supabase.md: its Realtime
delivers changes by polling, at once after a poll that found some and 500 ms after one that found
none, and every REST request and Realtime frame pays a 20 ms round trip), and reactor's workers
are real `reactor run` processes talking to it over HTTP and WebSocket only. pgqueuer's workers
(bench/peer_pgqueuer.py) reach Postgres through bench/delay_proxy.py, which adds the same round
trip to every exchange, half each way. Both run the same job, which only stamps time.time() when
its handler starts. Jobs are inserted straight into Postgres for both systems, as a frontend's
insert would be, never through the proxy.

- pickup: one worker of each system, jobs inserted one at a time at 5 and at 50 a second for
  `--seconds` each (after one job that shows the worker is up); from the moment each insert's
  commit returns (time.time() here) to its handler's start (time.time() in the worker, same
  machine);
- throughput: `--jobs` jobs inserted before the workers start, drained by 1 and by 4 worker
  processes, from the first handler's start to the moment the bench sees none left (polled every
  50 ms). reactor's workers run at concurrency 1,000, pgqueuer's with batch size 1,000, as in
  bench/peers.py. After a warm-up drain of a tenth as many jobs each, every drain is made
  `--rounds` times, the systems taking turns, and the median counts.

The systems take turns in every measurement, so both see the machine's drift. reactor's Realtime
budget is set to 200 messages a second, the setting the README gives for Pro (`--budget`). The
stack's Realtime counters for the whole run (messages delivered and dropped) are printed with the
table.

    pip install -e '.[dev,bench]'
    python bench/hosted_peers.py --database-url postgresql://postgres@127.0.0.1:5432/postgres [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peer_pgqueuer
from bench.delay_proxy import DelayProxy
from bench.peers import Peer, quantile, trickle
from bench.realtime_cost import HERE as ROOT
from bench.realtime_cost import workers as reactor_workers
from reactor import migrations
from reactor.devstack import database
from reactor.devstack.profile import Profile
from reactor.devstack.stack import Stack, serve

RATES = (5, 50)
FLEETS = (1, 4)
PLAN = "pro"


class Reactor:
    """reactor's side: `reactor run` processes against the hosted-profile stack."""

    name = "reactor"

    def __init__(self, stack: Stack, db: asyncpg.Connection) -> None:
        self.stack, self.db = stack, db

    @contextlib.asynccontextmanager
    async def workers(self, n: int, drain: bool) -> AsyncIterator[None]:
        # Pickup runs with the worker's default concurrency, drains with the one a no-op workload
        # should get (bench/worker.py: each claim is a round trip, so bigger batches are the knob).
        with mock.patch.dict(os.environ, {"REACTOR_CONCURRENCY": "1000"} if drain else {}):
            async with reactor_workers(ROOT, self.stack, n):
                yield

    async def insert(self) -> list[int]:
        return [await self.db.fetchval("insert into jobs (job_type) values ('stamp') returning id")]

    async def enqueue(self, n: int) -> None:
        await self.db.execute("insert into jobs (job_type) select 'stamp' from generate_series(1, $1)", n)

    async def remaining(self) -> int:
        return await self.db.fetchval(
            "select count(*) from jobs where job_type = 'stamp' and status <> 'completed'"
        )

    async def started(self) -> dict[int, float]:
        rows = await self.db.fetch(
            "select id, result from jobs where job_type = 'stamp' and status = 'completed'"
        )
        return {r["id"]: json.loads(r["result"])["started"] for r in rows}

    async def reset(self) -> None:
        await self.db.execute("delete from jobs")
        await self.db.execute("vacuum analyze")


class Pgqueuer:
    """pgqueuer's side: bench/peer_pgqueuer.py processes connected through the delay proxy."""

    name = "pgqueuer"

    def __init__(self, peer: Peer, db: asyncpg.Connection) -> None:
        self.peer, self.db = peer, db

    def workers(self, n: int, drain: bool) -> contextlib.AbstractAsyncContextManager:
        return self.peer.workers(n)  # batch size 1,000 for pickup and drains alike

    async def insert(self) -> list[int]:
        return await peer_pgqueuer.enqueue(self.db, 1)

    async def enqueue(self, n: int) -> None:
        await peer_pgqueuer.enqueue(self.db, n)

    async def remaining(self) -> int:
        return await peer_pgqueuer.remaining(self.db)

    async def started(self) -> dict[int, float]:
        return self.peer.started()

    async def reset(self) -> None:
        await self.db.execute("vacuum analyze")


System = Reactor | Pgqueuer


async def until_started(system: System, jobs: set[int], timeout: float = 120) -> dict[int, float]:
    """The systems' start stamps once every one of `jobs` has one."""
    deadline = time.monotonic() + timeout
    while not jobs <= (started := await system.started()).keys():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{system.name}: {len(jobs - started.keys())} jobs not started in {timeout} s")
        await asyncio.sleep(0.1)
    return started


async def pickup(system: System, rate: int, seconds: float) -> list[float]:
    """Milliseconds from each insert's commit to its handler's start, one worker."""
    await system.reset()
    async with system.workers(1, drain=False):
        await until_started(system, set(await system.insert()))  # up, connected and listening
        await asyncio.sleep(1.0)
        committed = await trickle(system.insert, rate, seconds)
        started = await until_started(system, set(committed))
    return [(started[job] - at) * 1000 for job, at in committed.items()]


async def drained(system: System, timeout: float = 600) -> float:
    """time.time() when the bench first sees no job of `system` left."""
    deadline = time.monotonic() + timeout
    while await system.remaining():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{system.name}: jobs left after {timeout} s")
        await asyncio.sleep(0.05)
    return time.time()


async def drain(system: System, workers: int, jobs: int) -> float:
    """Jobs a second `workers` processes drain `jobs` pre-inserted jobs at."""
    await system.reset()
    await system.enqueue(jobs)
    done = asyncio.create_task(drained(system))  # watched from the workers' first moment
    async with system.workers(workers, drain=True):
        end = await done
    return jobs / (end - min((await system.started()).values()))


async def distance(stack: Stack, proxy_url: str, n: int = 20) -> dict[str, float]:
    """Median milliseconds of a REST read from the stack and of `select 1` through the proxy."""
    key = stack.keys.service_role
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    rest, sql = [], []
    async with httpx.AsyncClient(headers=headers) as client:
        for _ in range(n):
            rest.append(await timed(client.get(f"{stack.url}/rest/v1/jobs?select=id&limit=1")))
    conn = await asyncpg.connect(proxy_url)
    try:
        for _ in range(n):
            sql.append(await timed(conn.fetchval("select 1")))
    finally:
        await conn.close()
    return {"rest": statistics.median(rest), "proxy": statistics.median(sql)}


async def timed(call: Awaitable[object]) -> float:
    start = time.perf_counter()
    await call
    return (time.perf_counter() - start) * 1000


async def set_budget(db: asyncpg.Connection, budget: int | None) -> str:
    if budget is None or not await db.fetchval("select to_regclass('reactor.realtime_budget') is not null"):
        return "reactor's Realtime budget left as installed"
    await db.execute("update reactor.realtime_budget set messages_per_second = $1", budget)
    return f"reactor's Realtime budget {budget} messages a second"


async def turns(
    systems: dict[str, System], measure: Callable[[System], Awaitable[object]]
) -> dict[str, object]:
    """`measure` of each system, one after the other."""
    return {name: await measure(system) for name, system in systems.items()}


async def main(server_url: str, args: argparse.Namespace) -> None:
    names = {"reactor": "reactor_hosted_peers", "pgqueuer": "reactor_hosted_peers_pgq"}
    profile = Profile.hosted(PLAN, round_trip_ms=args.round_trip_ms)
    server = urlsplit(server_url)
    started_at = datetime.now(UTC)
    try:
        urls = {name: await database.create_database(server_url, db) for name, db in names.items()}
        await database.bootstrap(urls["reactor"])
        await migrations.apply(urls["reactor"])
        await peer_pgqueuer.install(urls["pgqueuer"])
        with tempfile.TemporaryDirectory() as tmp:
            async with (
                serve(urls["reactor"], port=0, profile=profile) as stack,
                DelayProxy((server.hostname, server.port or 5432), args.round_trip_ms) as proxy,
            ):
                rdb, qdb = await asyncpg.connect(urls["reactor"]), await asyncpg.connect(urls["pgqueuer"])
                budget = await set_budget(rdb, args.budget)
                peer = Peer("pgqueuer", proxy.url(urls["pgqueuer"]), Path(tmp))
                systems = {"reactor": Reactor(stack, rdb), "pgqueuer": Pgqueuer(peer, qdb)}
                rtt = await distance(stack, peer.url)
                results: dict[str, dict[str, object]] = {name: {} for name in systems}
                for rate in RATES:
                    lat = await turns(systems, lambda s, rate=rate: pickup(s, rate, args.seconds))
                    for name, values in lat.items():
                        results[name][f"pickup{rate}"] = [quantile(values, 0.5), quantile(values, 0.99)]
                        results[name][f"pickup{rate}_n"] = len(values)
                await turns(systems, lambda s: drain(s, 1, max(1, args.jobs // 10)))  # warm-up
                rates: dict[str, dict[int, list[float]]] = {name: {n: [] for n in FLEETS} for name in systems}
                for _ in range(args.rounds):
                    for n in FLEETS:
                        for name, rate in (
                            await turns(systems, lambda s, n=n: drain(s, n, args.jobs))
                        ).items():
                            rates[name][n].append(rate)
                for name in systems:
                    for n in FLEETS:
                        results[name][f"drain{n}"] = statistics.median(rates[name][n])
                        results[name][f"drain{n}_rounds"] = rates[name][n]
                results["realtime"] = realtime_counts(stack)
                pg = await rdb.fetchval("show server_version")
                await rdb.close()
                await qdb.close()
        print(report(results, profile, rtt, budget, pg, started_at, args))
    finally:
        for db in names.values():
            await database.drop_database(server_url, db)


def realtime_counts(stack: Stack) -> dict[str, int]:
    c = stack.realtime.counters
    names = (
        "delivered",
        "dropped",
        "quota_reached",
        "broadcasts",
        "broadcasts_dropped",
        "broadcast_quota_reached",
    )
    return {name: getattr(c, name) for name in names}


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def report(
    results: dict,
    profile: Profile,
    rtt: dict[str, float],
    budget: str,
    pg: str,
    started_at: datetime,
    args: argparse.Namespace,
) -> str:
    realtime = results.pop("realtime")
    r, q = results["reactor"], results["pgqueuer"]
    lines = [
        f"Hosted profile, plan {profile.plan}, round trip {profile.round_trip_ms:g} ms "
        f"(measured medians: a REST read from the stack {rtt['rest']:.1f} ms, `select 1` through the "
        f"delay proxy {rtt['proxy']:.1f} ms); {budget}.",
        f"Profile: {profile.describe()}.",
        f"Run from {started_at:%Y-%m-%d %H:%M} UTC to {datetime.now(UTC):%H:%M} UTC on commit {commit()}; "
        f"{os.cpu_count()} cores, PostgreSQL {pg}, Python {platform.python_version()}, reactor "
        f"{version('reactor')}, pgqueuer {version('pgqueuer')}.",
        f"Plan: pickup with 1 worker each, {args.seconds:g} s at each rate ({r['pickup5_n']} and "
        f"{r['pickup50_n']} jobs for reactor, {q['pickup5_n']} and {q['pickup50_n']} for pgqueuer); "
        f"throughput: drains of {args.jobs:,} jobs, median of {args.rounds} after a warm-up drain of "
        f"{max(1, args.jobs // 10):,}; the systems take turns.",
        "",
        "| system | "
        + " | ".join(f"pickup p50 / p99 at {rate}/s, ms" for rate in RATES)
        + " | "
        + " | ".join(f"throughput, {n} worker{'s' * (n > 1)}, jobs/s" for n in FLEETS)
        + " |",
        "|---" * (1 + len(RATES) + len(FLEETS)) + "|",
    ]
    for name, m in results.items():
        cells = [f"{m[f'pickup{rate}'][0]:.1f} / {m[f'pickup{rate}'][1]:.1f}" for rate in RATES]
        cells += [f"{m[f'drain{n}']:,.0f}" for n in FLEETS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    pickups = (f"pickup{rate}" for rate in RATES)
    cells = [f"{r[k][0] / q[k][0]:.2f} / {r[k][1] / q[k][1]:.2f}" for k in pickups]
    cells += [f"{r[f'drain{n}'] / q[f'drain{n}']:.2f}" for n in FLEETS]
    lines.append("| reactor ÷ pgqueuer | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Pickup ratios above 1: reactor slower to start a job; throughput ratios above 1: reactor faster."
    )
    drains = (
        f"{name}, {n} worker(s): {', '.join(f'{x:,.0f}' for x in m[f'drain{n}_rounds'])}"
        for name, m in results.items()
        for n in FLEETS
    )
    lines.append("Every drain, jobs/s, in its system's order: " + "; ".join(drains) + ".")
    lines.append(
        f"The stack's Realtime over the run: {realtime['delivered']:,} postgres_changes messages and "
        f"{realtime['broadcasts']:,} broadcasts delivered; {realtime['dropped']} changes and "
        f"{realtime['broadcasts_dropped']} broadcasts dropped, quota reached "
        f"{realtime['quota_reached'] + realtime['broadcast_quota_reached']} time(s)."
    )
    lines.append("")
    lines.append(json.dumps({"rtt_ms": rtt, "realtime": realtime, **results}))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a Postgres server to use; each system gets its own database")
    parser.add_argument("--quick", action="store_true", help="5 s pickup runs, drains of 2,000 jobs, 1 round")
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds of inserts at each pickup rate")
    parser.add_argument("--jobs", type=int, default=20000, help="jobs in each throughput drain")
    parser.add_argument("--rounds", type=int, default=3, help="throughput drains per system and fleet size")
    parser.add_argument("--round-trip-ms", type=float, default=20.0, help="the hosted profile's round trip")
    parser.add_argument(
        "--budget",
        type=lambda s: None if s == "none" else int(s),
        default=200,
        help="reactor's Realtime budget",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.jobs, args.rounds = 5.0, 2000, 1
    with database.server(args.database_url) as url:
        asyncio.run(main(url, args))
