"""Four real workers, Realtime on, and a fault every few seconds: no job lost, stuck or overwritten.

The default run is bounded for CI (2,000 jobs, a minute of faults); `pytest -m slow tests/chaos`
runs the full one (20,000 jobs). Each prints its seed; CHAOS_SEED=<seed> replays the same faults
and job durations; CHAOS_HAND_OFF=off runs the workers with hand-offs off. Worker logs and the faults' timeline are kept in the test's
tmp_path/worker-logs. docs/reliability.md describes the run and its last full result.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import anyio
import asyncpg
import pytest

from tests.chaos.fleet import Fleet
from tests.chaos.gateway import Gateway
from tests.chaos.injector import Injector
from tests.chaos.plan import WORKERS, Plan, draw, seed_from_environment
from tests.chaos.verdict import Fates, Verdict, examine
from tests.support.worker import wait_until, worker_env

pytestmark = pytest.mark.anyio

# Shortened from the defaults (lease 60 s, sweeps 2/30 s, probe 30 s) so a run recovers from a
# kill in seconds; Realtime stays on, so socket and feed faults change how jobs are found.
WORKER_SETTINGS = {
    "REACTOR_REALTIME": "on",
    "REACTOR_CONCURRENCY": "20",
    "REACTOR_LEASE_SECONDS": "10",
    "REACTOR_POLL_FAST_SECONDS": "1",
    "REACTOR_POLL_SLOW_SECONDS": "10",
    "REACTOR_PROBE_SECONDS": "6",
    "REACTOR_REAP_SECONDS": "2",
    "REACTOR_RETRY_BASE_SECONDS": "1",
    "REACTOR_GRACE_SECONDS": "10",
    "REACTOR_LOG_LEVEL": "warning",
    "REACTOR_HAND_OFF": os.environ.get("CHAOS_HAND_OFF", "on"),  # off: every job goes through a claim
}
MAX_ATTEMPTS = 10  # a job should never come near this: each kill or lost lease costs one attempt
LATE_REPORT = "lease lost before the outcome was recorded; discarded"
OUTCOME_LOST = re.compile(r"outcome lost: .*? job_id=(\d+) .*? attempt=(\d+) ")


async def insert_steadily(db: asyncpg.Connection, durations: list[float], seconds: float) -> None:
    """Insert the jobs at an even rate over `seconds`, straight into Postgres as a frontend would
    through its own connection, so the faults touch only the workers' side."""
    start, sent = time.monotonic(), 0
    while sent < len(durations):
        due = min(len(durations), math.ceil(len(durations) * (time.monotonic() - start) / seconds))
        if due > sent:
            await db.execute(
                "insert into public.jobs (job_type, payload, max_attempts)"
                " select 'chaos', jsonb_build_object('seconds', s), $2 from unnest($1::float8[]) s",
                durations[sent:due],
                MAX_ATTEMPTS,
            )
            sent = due
        await anyio.sleep(0.1)


async def chaos_run(
    database_url: str, db: asyncpg.Connection, tmp_path: Path, plan: Plan, fault_seconds: float
) -> tuple[Verdict, str]:
    await db.execute(files("tests.chaos").joinpath("audit.sql").read_text())
    runs = tmp_path / "runs.jsonl"
    gateway = Gateway(database_url)
    began = time.monotonic()
    async with anyio.create_task_group() as group:
        stack = await group.start(gateway.run)

        def env(worker_id: str) -> dict[str, str]:
            return worker_env(stack, **WORKER_SETTINGS, REACTOR_WORKER_ID=worker_id, CHAOS_RUNS=str(runs))

        fleet = Fleet(group, env, "tests.chaos.app:app", WORKERS)
        injector = Injector(gateway, fleet)
        try:
            await fleet.start_all()
            async with anyio.create_task_group() as load:
                load.start_soon(insert_steadily, db, plan.durations, fault_seconds)
                load.start_soon(injector.run, plan.faults)
            gateway.stack.faults.clear()

            async def all_finished() -> bool:
                left = await db.fetchval(
                    "select count(*) from public.jobs where job_type = 'chaos'"
                    " and status not in ('completed', 'failed', 'cancelled')"
                )
                return left == 0

            with contextlib.suppress(AssertionError):  # the verdict names every job left unfinished
                await wait_until(all_finished, timeout=120)
            codes = await fleet.stop()
        finally:
            await fleet.aclose()
            logs = _keep_logs(fleet, injector, tmp_path)
            gateway.stop()
    fates = Fates(fleet.killed, fleet.frozen, _outcomes_lost(fleet))
    verdict = await examine(db, runs, len(plan.durations), fates, injector.log)
    verdict.problems.extend(await _unclean_stops(db, codes))
    late = sum(w.output.count(LATE_REPORT) for _, w in fleet.started)
    kinds = Counter(f.kind for f in injector.log)
    restarts = [f.ended - f.started for f in injector.log if f.kind == "restart_gateway"]
    report = "\n".join(
        [
            f"chaos seed {plan.seed} (replay: CHAOS_SEED={plan.seed}), {len(plan.durations)} jobs, "
            f"{time.monotonic() - began:.0f} s",
            f"faults {sum(kinds.values())}: {dict(kinds)}; gateway restarts {gateway.restarts}, "
            f"longest {max(restarts, default=0.0):.1f} s; "
            f"workers killed {sorted(fleet.killed)}, frozen {sorted(fleet.frozen)}",
            f"late reports refused by their stale lease token: {late}",
            verdict.describe(),
            f"worker logs: {logs}",
        ]
    )
    return verdict, report


async def _unclean_stops(db: asyncpg.Connection, codes: dict[str, int]) -> list[str]:
    """Every worker must exit 0 on SIGTERM, except one that had not yet started (the last fault
    can restart a worker just before the end): Python's default action ends it while it is still
    importing, which is harmless only if it never claimed a job."""
    problems = []
    for worker_id, code in codes.items():
        claims = await db.fetchval("select count(*) from chaos.transitions where new_worker = $1", worker_id)
        if code != 0 and not (code == -signal.SIGTERM and claims == 0):
            problems.append(f"worker {worker_id} exited with {code} on SIGTERM after {claims} claims")
    return problems


def _outcomes_lost(fleet: Fleet) -> set[tuple[int, int]]:
    """(job id, attempt) of every outcome a worker logged it gave up recording."""
    return {
        (int(job_id), int(attempt))
        for _, worker in fleet.started
        for job_id, attempt in OUTCOME_LOST.findall(worker.output)
    }


def _keep_logs(fleet: Fleet, injector: Injector, tmp_path: Path) -> Path:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    for worker_id, worker in fleet.started:
        (logs / f"{worker_id}.log").write_text(worker.output)
    (logs / "faults.txt").write_text(
        "".join(
            f"{datetime.fromtimestamp(f.started, UTC):%H:%M:%S.%f} {f.kind} {f.detail} "
            f"lasted {f.ended - f.started:.1f} s\n"
            for f in injector.log
        )
    )
    return logs


async def test_four_workers_under_random_faults_complete_every_job_once_and_explain_every_rerun(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    plan = draw(seed_from_environment(), jobs=2000, fault_seconds=60)
    verdict, report = await chaos_run(database_url, db, tmp_path, plan, fault_seconds=60)
    print(report)
    assert verdict.problems == [], report


@pytest.mark.slow
async def test_twenty_thousand_jobs_under_random_faults_complete_once_and_explain_every_rerun(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    plan = draw(seed_from_environment(), jobs=20000, fault_seconds=420)
    verdict, report = await chaos_run(database_url, db, tmp_path, plan, fault_seconds=420)
    print(report)
    assert verdict.problems == [], report
