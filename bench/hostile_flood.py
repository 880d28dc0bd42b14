"""Pickup and throughput while one signed-in user floods the queue with hostile rows, side by side
with the code from before the insert policy (docs/benchmarks.md, "Hostile rows").

Six measurements, each on a fresh database and local stack, taking turns:
the code before (`--before`, default the commit before sql/migrations/0008, checked out as a git
worktree with this tree's bench/ copied in, so both run the same measurement against their own
worker, SQL and stack) and this tree, each quiet and flooded; and, as a control, this tree while
the same flood goes to a neighbour (another project on the same machine): what the flood's
requests cost the shared cores alone, whatever they insert; and this tree while the user sends
only the flood's requests whose rows the policy takes, when the flood sends them (`allowed`): the
cost of the work a user is allowed, which an honest user could ask for as well.
Each measures bench/worker.py's pickup through Realtime (40 inserts a second for 10 s, hand-offs
on) and its drain of 20,000 no-op jobs by one worker at concurrency 1,000.

The flood is one user's requests to the REST API, as a frontend sends them, from a process of
its own (a frontend's client does not run in the API's process):
- first a backlog: 100 requests of 1,000 rows each of a job type no worker handles, at priority
  2^31-1 and run_at 1970;
- then, all through the measurement, 20 requests a second, in turn: a job of a handled type at
  the insert policy's limits (a 64 KiB payload), the same at priority 2^31-1, a job type no
  worker handles at priority 2^31-1, and a payload one byte over the policy's 64 KiB.
Rows that crash the code before (run_at -infinity, a payload nested 3,000 deep) are left out:
they would stop its worker; tests/test_hostile_rows.py shows them harmless now. The code before
has no policy and takes every row; this tree takes only the rows within the rule.

The local stack runs its default profile, or with `--profile hosted` hosted Supabase's on the Pro
plan (20 ms round trips, polled postgres_changes, quotas): there the code before is measured only
when `--before` names a commit that has the hosted profile, since the default (before 0008) knows
nothing of its limits.

    python bench/hostile_flood.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \
        [--turns N] [--profile hosted]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
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
# The pickup's inserts a second: 80 % of reactor's default Realtime budget (50 a second), the load a
# project would run at. At the budget itself any insert more, hostile or not, goes past it and is
# claimed by polling; the code before has no budget.
PICKUP_RATE = 40
ROW_AT_LIMIT = {"job_type": "sleep", "payload": {"seconds": 0, "pad": "x" * 65_000}}
STEADY = [
    ROW_AT_LIMIT,
    {**ROW_AT_LIMIT, "priority": TOP},
    {"job_type": "nobody_handles_this", "priority": TOP, "run_at": "1970-01-01T00:00:00Z"},
    {"job_type": "sleep", "payload": {"seconds": 0, "pad": "x" * 65_600}},
]


async def flood(url: str, anon: str, token: str, hostile: bool) -> None:
    """One user's requests, from a process of its own as a frontend's are from its own machine;
    without `hostile`, only the requests whose rows the policy takes, when the flood sends them
    (no backlog, and nothing in the other slots). Prints `backlog done` once the backlog is sent,
    and the answers' statuses as JSON when terminated."""
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    headers = {"apikey": anon, "Authorization": f"Bearer {token}", "Prefer": "return=minimal"}
    async with httpx.AsyncClient(base_url=f"{url}/rest/v1", headers=headers, timeout=60) as client:
        backlog = [STEADY[2]] * 1000
        for _ in range(100 if hostile else 0):
            statuses[(await client.post("/jobs", json=backlog)).status_code] += 1
        print("backlog done", flush=True)
        steady = STEADY if hostile else [STEADY[0], None, None, None]
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            if (row := steady[n % len(steady)]) is not None:
                statuses[(await client.post("/jobs", json=row)).status_code] += 1
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, 0.05 - (time.monotonic() - started)))
    print(json.dumps({str(k): v for k, v in sorted(statuses.items())}), flush=True)


@contextlib.asynccontextmanager
async def flooding(stack, hostile: bool):
    """The flood, running until the block ends; yields the answers' statuses, filled in at its end."""
    token = stack.keys.user_token(str(uuid.uuid4()))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--flood",
        stack.url,
        stack.keys.anon,
        token,
        str(hostile),
        stdout=asyncio.subprocess.PIPE,
    )
    statuses: dict[str, int] = {}
    try:
        assert process.stdout is not None
        if (await process.stdout.readline()).decode().strip() != "backlog done":
            raise RuntimeError("the flood stopped before its backlog was sent")
        yield statuses
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = await process.communicate()
        if out.strip():
            statuses.update(json.loads(out.decode().strip().splitlines()[-1]))


@contextlib.asynccontextmanager
async def project(server_url: str, profile_name: str):
    """A fresh database with reactor's contract, and a local stack over it."""
    from reactor import migrations
    from reactor.devstack import database
    from reactor.devstack.stack import serve

    options = {}
    if profile_name == "hosted":
        from reactor.devstack.profile import Profile

        options["profile"] = Profile.hosted("pro")

    name = f"reactor_bench_flood_{uuid.uuid4().hex[:8]}"
    database_url = await database.create_database(server_url, name)
    try:
        await database.bootstrap(database_url)
        await migrations.apply(database_url)
        async with serve(database_url, port=0, **options) as stack:
            db = await asyncpg.connect(database_url)
            try:
                if await db.fetchval("select to_regproc('reactor.allow_insert') is not null"):
                    await db.execute("select reactor.allow_insert('jobs', 'sleep')")
                yield stack, db
            finally:
                await db.close()
    finally:
        await database.drop_database(server_url, name)


async def measure(server_url: str, flood_at: str, profile_name: str) -> dict:
    """Pickup and drain of a worker on its own project, while the flood goes to `flood_at`: nowhere,
    the worker's own project (`queue`; `allowed`: only the rows the policy takes), or a neighbour
    (another project on the same machine)."""
    from bench.worker import drain, pickup_latencies, quantile

    statuses: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as projects:
        stack, db = await projects.enter_async_context(project(server_url, profile_name))
        target = stack
        if flood_at == "neighbour":  # the control for the requests' cost
            target, _ = await projects.enter_async_context(project(server_url, profile_name))
        async with contextlib.AsyncExitStack() as flood_of:
            if flood_at != "nowhere":
                statuses = await flood_of.enter_async_context(flooding(target, flood_at != "allowed"))
            lat = await pickup_latencies(stack, db, realtime=True, rate=PICKUP_RATE)
            rate, _ = await drain(stack, db)
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


def run(tree: Path, server_url: str, flood_at: str, profile_name: str) -> dict:
    command = [sys.executable, "bench/hostile_flood.py", "--measure", flood_at, "--database-url", server_url]
    command += ["--profile", profile_name]
    result = subprocess.run(
        command,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(server_url: str | None, commit: str, turns: int, profile_name: str) -> None:
    from reactor.devstack import database

    before_has_profile = profile_name == "local" or commit != BEFORE
    trees = {"before": before_tree(commit), "now": ROOT} if before_has_profile else {"now": ROOT}
    kinds = {"before": ("nowhere", "queue"), "now": ("nowhere", "queue", "neighbour", "allowed")}
    results: dict[tuple[str, str], list[dict]] = {}
    with database.server(server_url) as url:
        for turn in range(turns):
            for label, tree in trees.items():
                for flood_at in kinds[label]:
                    found = run(tree, url, flood_at, profile_name)
                    results.setdefault((label, flood_at), []).append(found)
                    print(f"turn {turn + 1}: {label}, flood at {flood_at}: {json.dumps(found)}", flush=True)
    print(f"\nProfile: {profile_name}.")
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
    parser.add_argument("--profile", choices=("local", "hosted"), default="local", help="the stack's profile")
    parser.add_argument(
        "--measure", choices=("nowhere", "queue", "neighbour", "allowed"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--flood", nargs=4, metavar=("URL", "ANON", "TOKEN", "HOSTILE"), help=argparse.SUPPRESS
    )
    options = parser.parse_args()
    if options.flood:
        url, anon, token, hostile = options.flood
        asyncio.run(flood(url, anon, token, hostile == "True"))
    elif options.measure:
        print(json.dumps(asyncio.run(measure(options.database_url, options.measure, options.profile))))
    else:
        main(options.database_url, options.before, options.turns, options.profile)
