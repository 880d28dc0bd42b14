"""reactor side by side with pgqueuer and procrastinate, and the raw SQL limit, in one run.

Each system gets its own fresh database on the same Postgres server and the same no-op job:

- throughput: 20,000 jobs inserted up front, drained by one worker process; timed from the
  first job the worker runs to the last one done. Each system first drains 2,000 jobs with a
  worker process of its own, so the measured drain finds the server's caches and connections as
  a running system has them (reactor's first drain on a fresh stack was about 20 % slower, the
  peers' was not). Then each system drains 20,000 three times, the systems taking turns, and the
  median counts: single drains of the same system moved by up to a third within an hour on this
  shared machine, and taking turns exposes every system to the same drift;
- pickup latency: jobs inserted one at a time at 50 and at 500 a second; from the moment the
  insert's commit returns (time.time() in this process) to the handler's start (time.time() in
  the worker, same machine). reactor runs twice: as deployed, with hand-offs (the insert leases
  the job to the worker standing by, sql/migrations/0007), and with them off (a claim request
  after each Realtime event), so the two paths are compared in the same run;
- idle: what a worker with nothing to do asks of the server in 60 s, all systems at once: for
  reactor its HTTP requests (its own RPC counters), for the peers their database's committed and
  rolled-back transactions (pg_stat_database; pg_stat_statements is not loaded on this server);
- herd: 4 worker processes while jobs arrive one at a time at 50 a second: claim calls per
  completed job (reactor: reactor_claim_jobs, reactor_claim_batch and reactor_tick requests from
  each worker's /metrics;
  the peers: calls to their dequeue query, counted by wrapping it in the worker process);
- raw limit: bench/sql_claim_complete.py's claim-and-complete loop, batch 100, one connection.

Between the throughput drain and the pickup runs every system's database is vacuumed, as
autovacuum would do after 20,000 finished jobs: otherwise each pickup run starts behind 20,000 dead
index entries at a random point of autovacuum's schedule (reactor's p50 went from 4.0 to 5.8 ms).

    pip install -e '.[dev,bench]'
    python bench/peers.py --database-url postgresql://postgres@127.0.0.1:5432/postgres [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peer_pgqueuer, peer_procrastinate, sql_claim_complete
from bench import worker as reactor_bench
from reactor import migrations
from reactor.devstack import database
from reactor.devstack.stack import Stack, serve

HERE = Path(__file__).resolve().parent
PEERS = {"pgqueuer": peer_pgqueuer, "procrastinate": peer_procrastinate}
ROUNDS = 3  # throughput drains per system, taken in turns; the table shows the median


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Peer:
    """One peer's database and worker processes."""

    def __init__(self, name: str, url: str, tmp: Path) -> None:
        self.name, self.url, self.module = name, url, PEERS[name]
        self.stamps, self.tmp = tmp / f"{name}.stamps", tmp

    @contextlib.asynccontextmanager
    async def workers(self, n: int = 1):
        self.stamps.write_text("")
        counts = [self.tmp / f"{self.name}.{i}.count" for i in range(n)]
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / f"peer_{self.name}.py"),
                self.url,
                str(self.stamps),
                str(c),
                stderr=asyncio.subprocess.DEVNULL,
            )
            for c in counts
        ]
        try:
            yield counts
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                await process.wait()

    def started(self) -> dict[int, float]:
        rows = (line.split(",") for line in self.stamps.read_text().splitlines() if line)
        return {int(job): float(at) for job, at in rows}

    async def throughput(self, db: asyncpg.Connection, n: int) -> float:
        await self.module.enqueue(db, n)
        async with self.workers():
            while not self.stamps.read_text():
                await asyncio.sleep(0.01)
            while await self.module.remaining(db):
                await asyncio.sleep(0.05)
            done = time.time()
        return n / (done - min(self.started().values()))

    async def pickup(self, db: asyncpg.Connection, rate: int, seconds: float) -> list[float]:
        async with self.workers():
            await asyncio.sleep(2.0)
            committed = await trickle(lambda: self.module.enqueue(db, 1), rate, seconds)
            while len(self.started()) < len(committed):
                await asyncio.sleep(0.05)
        started = self.started()
        return [(started[job] - at) * 1000 for job, at in committed.items()]

    async def herd(self, db: asyncpg.Connection, rate: int, seconds: float) -> float:
        async with self.workers(4) as counts:
            await asyncio.sleep(2.0)
            before = sum(int(c.read_text() or 0) for c in counts)
            committed = await trickle(lambda: self.module.enqueue(db, 1), rate, seconds)
            while await self.module.remaining(db):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.6)  # one more count report from each worker
            after = sum(int(c.read_text() or 0) for c in counts)
        return (after - before) / len(committed)


async def trickle(insert, rate: int, seconds: float) -> dict[int, float]:
    """Insert one job at a time at `rate` a second; when each insert's commit returned."""
    committed: dict[int, float] = {}
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        [job] = await insert()
        committed[job] = time.time()
        await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
    return committed


async def transactions(server: asyncpg.Connection, name: str) -> int:
    return await server.fetchval(
        "select xact_commit + xact_rollback from pg_stat_database where datname = $1", name
    )


async def reactor_herd(stack: Stack, db: asyncpg.Connection, rate: int, seconds: float) -> float:
    """Claim requests per completed job with 4 reactor workers, jobs arriving one at a time."""
    await db.execute("delete from jobs")
    ports = [18090 + i for i in range(4)]
    async with contextlib.AsyncExitStack() as workers:
        for port in ports:
            await workers.enter_async_context(reactor_bench.worker(stack, REACTOR_HEALTH_PORT=str(port)))
        await asyncio.sleep(2.0)
        before = await claim_requests(ports)
        ids = await trickle(
            lambda: db.fetch("insert into jobs (job_type) values ('noop') returning id"), rate, seconds
        )
        await reactor_bench.wait_done(db, "noop", len(ids))
        after = await claim_requests(ports)
    return (after - before) / len(ids)


async def claim_requests(ports: list[int]) -> int:
    total = 0
    async with httpx.AsyncClient() as client:
        for port in ports:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            total += sum(
                int(float(n))
                for n in re.findall(
                    r'^reactor_rpc_calls_total\{function="reactor_(?:claim_jobs|claim_batch|tick)",[^}]*\} (\S+)$',
                    metrics,
                    re.M,
                )
            )
    return total


def parse_pickup(text: str) -> list[float]:
    """bench/worker.py's pickup line: 'p50 9.6 ms, p99 16.9 ms over 500 jobs'."""
    p50, p99 = re.findall(r"p\d+ ([\d.]+) ms", text)
    return [float(p50), float(p99)]


async def main(server_url: str, quick: bool, turns: int | None = None) -> None:
    """The whole comparison; with `turns`, only reactor's and pgqueuer's throughput, that many
    drains each taken in turns, for a throughput ratio with more samples than the full run's."""
    jobs, seconds, idle = (2000, 3.0, 20.0) if quick else (20000, 10.0, 60.0)
    warmup = jobs // 10
    systems = ("reactor", "pgqueuer") if turns else ("reactor", *PEERS)
    results: dict[str, dict[str, object]] = {name: {} for name in systems}
    server = await asyncpg.connect(server_url)
    names = {name: f"reactor_peers_{name}" for name in results}
    try:
        urls = {name: await database.create_database(server_url, db) for name, db in names.items()}
        await database.bootstrap(urls["reactor"])
        await migrations.apply(urls["reactor"])
        for name in systems[1:]:
            await PEERS[name].install(urls[name])
        with tempfile.TemporaryDirectory() as tmp:
            peers = {name: Peer(name, urls[name], Path(tmp)) for name in systems[1:]}
            async with serve(urls["reactor"], port=0) as stack:
                rdb = await asyncpg.connect(urls["reactor"])
                dbs = {name: await asyncpg.connect(peer.url) for name, peer in peers.items()}

                async def drain(name: str, n: int) -> float:
                    if name == "reactor":
                        await rdb.execute("delete from jobs")
                        await rdb.execute("vacuum analyze")
                        line = await reactor_bench.throughput(stack, rdb, n)
                        return float(re.match(r"(\d+)", line).group(1))
                    await dbs[name].execute("vacuum analyze")
                    return await peers[name].throughput(dbs[name], n)

                for name in results:
                    await drain(name, warmup)
                rates: dict[str, list[float]] = {name: [] for name in results}
                for _ in range(turns or ROUNDS):
                    for name in results:
                        rates[name].append(await drain(name, jobs))
                for name in results:
                    results[name]["throughput"] = statistics.median(rates[name])
                    results[name]["throughput_rounds"] = rates[name]
                if turns:
                    print(turns_report(rates, jobs))
                    return
                await rdb.execute("delete from jobs")
                await rdb.execute("vacuum analyze")
                for rate in (50, 500):
                    for hand_off, key in ((True, "pickup"), (False, "claim_pickup")):
                        line = await reactor_bench.pickup(
                            stack, rdb, realtime=True, rate=rate, seconds=seconds, hand_off=hand_off
                        )
                        results["reactor"][f"{key}{rate}"] = parse_pickup(line)
                for name, peer in peers.items():
                    db = dbs.pop(name)
                    await db.execute("vacuum analyze")
                    for rate in (50, 500):
                        lat = await peer.pickup(db, rate, seconds)
                        results[name][f"pickup{rate}"] = [quantile(lat, 0.5), quantile(lat, 0.99)]
                    await db.close()
                for name, values in (await idle_all(stack, rdb, server, peers, names, idle)).items():
                    results[name].update(values)
                results["reactor"]["herd"] = await reactor_herd(stack, rdb, 50, seconds)
                for name, peer in peers.items():
                    db = await asyncpg.connect(peer.url)
                    results[name]["herd"] = await peer.herd(db, 50, seconds)
                    await db.close()
                await rdb.close()
        raw = await sql_claim_complete.run_one(server_url, 100, jobs, 1)
        print(report(results, raw, jobs, seconds, idle, await server.fetchval("show server_version")))
    finally:
        for db in names.values():
            await database.drop_database(server_url, db)
        await server.close()


async def idle_all(stack, rdb, server, peers: dict[str, Peer], names, seconds: float) -> dict:
    """Every system idle in the same window, so they share the machine's conditions."""
    out = {name: {} for name in ("reactor", *peers)}
    async with contextlib.AsyncExitStack() as running:
        process = await running.enter_async_context(reactor_bench.worker(stack))
        for peer in peers.values():
            await running.enter_async_context(peer.workers())
        await asyncio.sleep(3.0)
        async with httpx.AsyncClient() as client:
            before = reactor_bench._rpc_total((await client.get("http://127.0.0.1:18080/metrics")).text)
            xacts = {name: await transactions(server, names[name]) for name in peers}
            await asyncio.sleep(seconds)
            after = reactor_bench._rpc_total((await client.get("http://127.0.0.1:18080/metrics")).text)
            await asyncio.sleep(11.0)  # idle backends report their statistics at most every 10 s
            for name in peers:
                out[name]["idle"] = (
                    (await transactions(server, names[name]) - xacts[name]) * 60 / (seconds + 11)
                )
        out["reactor"]["idle"] = (after - before) * 60 / seconds
        del process
    return out


def turns_report(rates: dict[str, list[float]], jobs: int) -> str:
    reactor, pgqueuer = rates["reactor"], rates["pgqueuer"]
    lines = [
        f"Throughput, {jobs} jobs a drain, {len(reactor)} turns after a warm-up drain each.",
        "",
        "| turn | reactor, jobs/s | pgqueuer, jobs/s | reactor ÷ pgqueuer |",
        "|---:|---:|---:|---:|",
    ]
    for turn, (r, q) in enumerate(zip(reactor, pgqueuer, strict=True), 1):
        lines.append(f"| {turn} | {r:,.0f} | {q:,.0f} | {r / q:.2f} |")
    r, q = statistics.median(reactor), statistics.median(pgqueuer)
    lines.append(f"| median | {r:,.0f} | {q:,.0f} | {r / q:.2f} |")
    return "\n".join(lines)


def report(results: dict, raw: float, jobs: int, seconds: float, idle: float, pg: str) -> str:
    r = results["reactor"]
    lines = [
        f"Machine: {os.cpu_count()} cores, PostgreSQL {pg}, Python {platform.python_version()}; "
        f"reactor {version('reactor')}, pgqueuer {version('pgqueuer')}, procrastinate "
        f"{version('procrastinate')}; {jobs} jobs after a warm-up drain of {jobs // 10}, pickup runs "
        f"of {seconds:g} s, idle {idle:g} s.",
        "",
        "| system | throughput, jobs/s (median of 3) | pickup p50 / p99 at 50/s, ms "
        "| pickup p50 / p99 at 500/s, ms | idle, per minute | claim calls per job, 4 workers |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        ratio = "" if name == "reactor" else f" ({m['throughput'] / r['throughput']:.2f}x)"
        p50 = "" if name == "reactor" else f" ({m['pickup50'][0] / r['pickup50'][0]:.2f}x)"
        unit = "HTTP requests" if name == "reactor" else "transactions"
        (p50_50, p99_50), (p50_500, p99_500) = m["pickup50"], m["pickup500"]
        lines.append(
            f"| {name} | {m['throughput']:,.0f}{ratio} | {p50_50:.1f}{p50} / {p99_50:.1f} "
            f"| {p50_500:.1f} / {p99_500:.1f} | {m['idle']:.1f} {unit} | {m['herd']:.2f} |"
        )
    (p50_50, p99_50), (p50_500, p99_500) = r["claim_pickup50"], r["claim_pickup500"]
    lines.append(
        f"| reactor, hand-offs off (a claim after each event) | | {p50_50:.1f} "
        f"({p50_50 / r['pickup50'][0]:.2f}x) / {p99_50:.1f} | {p50_500:.1f} / {p99_500:.1f} | | |"
    )
    lines.append(
        f"| raw SQL limit (batch 100, asyncpg) | {raw:,.0f} ({raw / r['throughput']:.2f}x) | | | | |"
    )
    lines.append("")
    drains = (
        f"{name} {', '.join(f'{r:,.0f}' for r in m['throughput_rounds'])}" for name, m in results.items()
    )
    lines.append("Throughput drains, in the order run: " + "; ".join(drains))
    lines.append("")
    lines.append(json.dumps(results))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a Postgres server to use; each system gets its own database")
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 3 s pickup runs, 20 s idle")
    parser.add_argument(
        "--throughput-turns", type=int, metavar="N", help="only reactor's and pgqueuer's drains, N turns each"
    )
    args = parser.parse_args()
    with database.server(args.database_url) as url:
        asyncio.run(main(url, args.quick, args.throughput_turns))
