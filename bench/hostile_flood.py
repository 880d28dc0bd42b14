"""Pickup and throughput while one signed-in user floods the queue with hostile rows, side by side
with the code from before the insert policy (docs/benchmarks.md, "Hostile rows").

Six measurements, each on a fresh database and local stack (its default profile), taking turns:
the code before (`--before`, default the commit before sql/migrations/0008, checked out as a git
worktree with this tree's bench/ copied in, so both run the same measurement against their own
worker, SQL and stack) and this tree, each quiet and flooded; and, as a control, this tree while
the same flood goes to a neighbour (another project on the same machine): what the flood's
requests cost the shared cores alone, whatever they insert; and this tree while the user sends
only rows the policy takes, at the same pace (`allowed`): the cost of the work a user is allowed.
Each measures bench/worker.py's pickup through Realtime (50 inserts a second for 10 s, hand-offs
on) and its drain of 20,000 no-op jobs by one worker at concurrency 1,000.

The flood is one user's requests to the REST API, as a frontend sends them:
- first a backlog: 100 requests of 1,000 rows each of a job type no worker handles, at priority
  2^31-1 and run_at 1970;
- then, all through the measurement, 20 requests a second, in turn: a job of a handled type at
  the insert policy's limits (a 64 KiB payload), the same at priority 2^31-1, a job type no
  worker handles at priority 2^31-1, and a payload one byte over the policy's 64 KiB.
Rows that crash the code before (run_at -infinity, a payload nested 3,000 deep) are left out:
they would stop its worker; tests/test_hostile_rows.py shows them harmless now. The code before
has no policy and takes every row; this tree takes only the rows within the rule.

    python bench/hostile_flood.py --database-url postgresql://postgres@127.0.0.1:5432/postgres [--turns N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "61f1b57"  # the last commit before sql/migrations/0008_hostile_rows.sql
TOP = 2**31 - 1
ROW_AT_LIMIT = {"job_type": "sleep", "payload": {"seconds": 0, "pad": "x" * 65_000}}
STEADY = [
    ROW_AT_LIMIT,
    {**ROW_AT_LIMIT, "priority": TOP},
    {"job_type": "nobody_handles_this", "priority": TOP, "run_at": "1970-01-01T00:00:00Z"},
    {"job_type": "sleep", "payload": {"seconds": 0, "pad": "x" * 65_600}},
]


async def flood(stack, statuses: Counter[int], backlog_done: asyncio.Event, hostile: bool = True) -> None:
    """One user's requests; without `hostile`, only the rows the policy takes, at the same pace."""
    headers = {
        "apikey": stack.keys.anon,
        "Authorization": f"Bearer {stack.keys.user_token(str(uuid.uuid4()))}",
        "Prefer": "return=minimal",
    }
    async with httpx.AsyncClient(base_url=f"{stack.url}/rest/v1", headers=headers, timeout=60) as client:
        backlog = [STEADY[2]] * 1000
        for _ in range(100 if hostile else 0):
            statuses[(await client.post("/jobs", json=backlog)).status_code] += 1
        backlog_done.set()
        steady = STEADY if hostile else STEADY[:1]
        n = 0
        while True:
            started = time.monotonic()
            statuses[(await client.post("/jobs", json=steady[n % len(steady)])).status_code] += 1
            n += 1
            await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - started)))


@contextlib.asynccontextmanager
async def project(server_url: str):
    """A fresh database with reactor's contract, and a local stack over it."""
    from reactor import migrations
    from reactor.devstack import database
    from reactor.devstack.stack import serve

    name = f"reactor_bench_flood_{uuid.uuid4().hex[:8]}"
    database_url = await database.create_database(server_url, name)
    try:
        await database.bootstrap(database_url)
        await migrations.apply(database_url)
        async with serve(database_url, port=0) as stack:
            db = await asyncpg.connect(database_url)
            try:
                if await db.fetchval("select to_regproc('reactor.allow_insert') is not null"):
                    await db.execute("select reactor.allow_insert('jobs', 'sleep')")
                yield stack, db
            finally:
                await db.close()
    finally:
        await database.drop_database(server_url, name)


async def measure(server_url: str, flood_at: str) -> dict:
    """Pickup and drain of a worker on its own project, while the flood goes to `flood_at`: nowhere,
    the worker's own project (`queue`; `allowed`: only the rows the policy takes), or a neighbour
    (another project on the same machine)."""
    from bench.worker import drain, pickup_latencies, quantile

    statuses: Counter[int] = Counter()
    async with contextlib.AsyncExitStack() as stack_of:
        stack, db = await stack_of.enter_async_context(project(server_url))
        target = stack
        if flood_at == "neighbour":  # the control for the requests' cost
            target, _ = await stack_of.enter_async_context(project(server_url))
        flooding = None
        if flood_at != "nowhere":
            backlog_done = asyncio.Event()
            flooding = asyncio.create_task(flood(target, statuses, backlog_done, flood_at != "allowed"))
            await backlog_done.wait()
        try:
            lat = await pickup_latencies(stack, db, realtime=True)
            rate, _ = await drain(stack, db)
        finally:
            if flooding is not None:
                flooding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flooding
        rows = await db.fetchval("select count(*) from jobs")
    return {
        "p50": quantile(lat, 0.5),
        "p99": quantile(lat, 0.99),
        "rate": rate,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rows_left": rows,
    }


def before_tree(commit: str) -> Path:
    tree = Path(f"/tmp/reactor-before-{commit}")
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True)
    for path in (ROOT / "bench").glob("*.py"):
        shutil.copy(path, tree / "bench" / path.name)
    return tree


def run(tree: Path, server_url: str, flood_at: str) -> dict:
    command = [sys.executable, "bench/hostile_flood.py", "--measure", flood_at, "--database-url", server_url]
    result = subprocess.run(
        command,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(server_url: str | None, commit: str, turns: int) -> None:
    from reactor.devstack import database

    trees = {"before": before_tree(commit), "now": ROOT}
    kinds = {"before": ("nowhere", "queue"), "now": ("nowhere", "queue", "neighbour", "allowed")}
    results: dict[tuple[str, str], list[dict]] = {}
    with database.server(server_url) as url:
        for turn in range(turns):
            for label, tree in trees.items():
                for flood_at in kinds[label]:
                    found = run(tree, url, flood_at)
                    results.setdefault((label, flood_at), []).append(found)
                    print(f"turn {turn + 1}: {label}, flood at {flood_at}: {json.dumps(found)}", flush=True)
    print("\n| code | flood at | pickup p50 | pickup p99 | drain | flood answers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (label, flood_at), runs in results.items():
        p50 = statistics.median(r["p50"] for r in runs)
        p99 = statistics.median(r["p99"] for r in runs)
        rate = statistics.median(r["rate"] for r in runs)
        answers = ", ".join(f"{n} x {code}" for code, n in runs[-1]["statuses"].items()) or "-"
        cells = [label, flood_at, f"{p50:.1f} ms", f"{p99:.1f} ms", f"{rate:,.0f} jobs/s", answers]
        print(f"| {' | '.join(cells)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="a Postgres server; each measurement makes its own database")
    parser.add_argument("--before", default=BEFORE, help="the commit to compare with")
    parser.add_argument("--turns", type=int, default=1, help="measurements of each kind; medians reported")
    parser.add_argument(
        "--measure", choices=("nowhere", "queue", "neighbour", "allowed"), help=argparse.SUPPRESS
    )
    options = parser.parse_args()
    if options.measure:
        print(json.dumps(asyncio.run(measure(options.database_url, options.measure))))
    else:
        main(options.database_url, options.before, options.turns)
