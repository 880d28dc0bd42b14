"""The chaos run's verdict, from the database's audit of every status change and the runs file.

What must hold, whatever the faults did:
- every job inserted is `completed`: none lost, none left `processing` or `pending`, none `failed`;
- a finished job never changes again, and each was completed once, by the run holding its lease
  at that moment (the result names the run's lease token, attempt and worker): no late report
  overwrote a new owner;
- every run of a handler ran under a lease the database granted, one run per lease, and a job's
  attempts are its claims less the claims handed back at shutdown;
- a job that ran more than once did so because each earlier lease was reclaimed (reaped after it
  expired, released, or a hand-off requeued unconfirmed): every duplicate run is explained.

Pickup is from the insert to the first handler start (each run records when it began).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

LEASE_EXPIRED = "lease expired"


@dataclass
class FaultEvent:
    kind: str
    started: float  # wall-clock seconds, comparable with the database's timestamps on this host
    ended: float
    detail: str


@dataclass
class Fates:
    """What befell the workers, to say why a job ran again."""

    killed: set[str]  # worker ids sent SIGKILL
    frozen: set[str]  # worker ids sent SIGSTOP for longer than a lease
    outcomes_lost: set[tuple[int, int]]  # (job id, attempt) whose worker gave up recording the outcome


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    jobs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    duplicate_runs: Counter[str] = field(default_factory=Counter)  # why each extra run happened
    claims_never_run: int = 0  # claims whose answer never reached a worker (lost in a fault)
    pickup_seconds: list[float] = field(default_factory=list)  # first run's start - created_at, per job
    worst_pickup: tuple[float, int, list[str]] = (0.0, 0, [])  # seconds, job id, faults active then
    finish_seconds_max: float = 0.0  # completed_at - created_at, worst job

    def describe(self) -> str:
        pickups = sorted(self.pickup_seconds) or [0.0]
        worst, worst_id, active = self.worst_pickup
        lines = [
            f"jobs {self.jobs}: {dict(self.statuses)}",
            f"handler runs {self.runs}; duplicate runs {sum(self.duplicate_runs.values())}: "
            f"{dict(self.duplicate_runs) or 'none'}",
            f"claims whose answer was lost before any run: {self.claims_never_run}",
            f"pickup (first handler start - insert) p50 {statistics.median(pickups):.3f} s, "
            f"p99 {pickups[int(0.99 * (len(pickups) - 1))]:.3f} s, worst {worst:.3f} s "
            f"(job {worst_id}; faults active at its insert: {', '.join(active) or 'none'})",
            f"worst insert-to-completed {self.finish_seconds_max:.3f} s",
        ]
        return "\n".join(lines + [f"PROBLEM: {p}" for p in self.problems])


async def examine(
    db: asyncpg.Connection, runs_file: Path, expected: int, fates: Fates, faults: list[FaultEvent]
) -> Verdict:
    verdict = Verdict()
    jobs = {
        r["id"]: r
        for r in await db.fetch(
            "select id, status, attempts, result, created_at, completed_at from public.jobs where job_type = 'chaos'"
        )
    }
    verdict.jobs = len(jobs)
    verdict.statuses = Counter(r["status"] for r in jobs.values())
    if len(jobs) != expected:
        verdict.problems.append(f"{expected} jobs inserted, {len(jobs)} in the table")
    unfinished = sorted(i for i, r in jobs.items() if r["status"] != "completed")
    if unfinished:
        verdict.problems.append(f"{len(unfinished)} jobs not completed, e.g. {_rows(jobs, unfinished[:10])}")

    transitions: dict[int, list[asyncpg.Record]] = defaultdict(list)
    for t in await db.fetch("select * from chaos.transitions order by seq"):
        if t["job_id"] in jobs:
            transitions[t["job_id"]].append(t)
    runs = _read_runs(runs_file)
    verdict.runs = sum(len(r) for r in runs.values())
    for job_id, job in jobs.items():
        _check_job(verdict, job_id, job, transitions[job_id], runs.get(job_id, []), fates)
    _latencies(verdict, jobs, runs, faults)
    return verdict


def _check_job(
    verdict: Verdict,
    job_id: int,
    job: asyncpg.Record,
    history: list[asyncpg.Record],
    runs: list[dict[str, Any]],
    fates: Fates,
) -> None:
    problem = verdict.problems.append
    if any(t["old_status"] in ("completed", "failed", "cancelled") for t in history):
        problem(f"job {job_id} changed after it finished: {_history(history)}")
    completions = [t for t in history if t["new_status"] == "completed" and t["old_status"] != "completed"]
    if job["status"] == "completed" and len(completions) != 1:
        problem(f"job {job_id} completed {len(completions)} times: {_history(history)}")
    for done in completions:
        result = json.loads(done["result"]) if done["result"] else None
        result = result if isinstance(result, dict) else {}
        holder = (str(done["old_token"]), done["old_attempts"], done["old_worker"])
        if (result.get("lease_token"), result.get("attempt"), result.get("worker")) != holder:
            problem(
                f"job {job_id} completed by a run that did not hold its lease: result {result}, lease {holder}"
            )

    claims = {str(t["new_token"]): t for t in history if t["new_status"] == "processing"}
    endings = {str(t["old_token"]): t for t in history if t["old_status"] == "processing"}
    released = sum(1 for t in endings.values() if _how_ended(t) in ("released", "unconfirmed"))
    if job["attempts"] != len(claims) - released:
        problem(
            f"job {job_id} has attempts {job['attempts']} after {len(claims)} claims, {released} released"
        )

    tokens = Counter(r["lease_token"] for r in runs)
    for token, count in tokens.items():
        if token not in claims:
            problem(f"job {job_id} ran under lease {token}, which was never granted")
        elif count > 1:
            problem(f"job {job_id} ran {count} times under one lease {token}")
    for run in runs:
        claim = claims.get(run["lease_token"])
        if claim is not None and (claim["new_attempts"], claim["new_worker"]) != (
            run["attempt"],
            run["worker"],
        ):
            problem(f"job {job_id} run {run} does not match its claim by {claim['new_worker']}")
    verdict.claims_never_run += sum(1 for token in claims if token not in tokens)

    final = str(completions[-1]["old_token"]) if completions else None
    for run in runs:
        if run["lease_token"] == final:
            continue
        ending = endings.get(run["lease_token"])
        how = _how_ended(ending) if ending is not None else "never ended"
        if how == "reaped":
            verdict.duplicate_runs[_why_reaped(job_id, run, fates)] += 1
        elif how == "released":
            verdict.duplicate_runs["handed back at shutdown"] += 1
        elif how == "unconfirmed":
            verdict.duplicate_runs["hand-off not confirmed in time"] += 1
        else:
            problem(f"job {job_id} ran again after a run whose lease {how}: {_history(history)}")


def _why_reaped(job_id: int, run: dict[str, Any], fates: Fates) -> str:
    if run["worker"] in fates.killed:
        return "worker killed"
    if (job_id, run["attempt"]) in fates.outcomes_lost:
        return "outcome unrecorded through an API outage"
    if run["worker"] in fates.frozen:
        return "worker frozen past its lease"
    return "lease expired, worker alive"


def _how_ended(ending: asyncpg.Record) -> str:
    if ending["new_status"] == "completed":
        return "completed"
    if (ending["last_error"] or "").startswith(LEASE_EXPIRED) and ending["new_attempts"] == ending[
        "old_attempts"
    ]:
        return "reaped"
    if ending["new_status"] == "pending" and ending["new_attempts"] == ending["old_attempts"] - 1:
        return "released" if ending["old_started"] else "unconfirmed"
    return f"ended as {ending['new_status']} ({ending['last_error']})"


def _latencies(
    verdict: Verdict,
    jobs: dict[int, asyncpg.Record],
    runs: dict[int, list[dict[str, Any]]],
    faults: list[FaultEvent],
) -> None:
    worst = (0.0, 0, datetime.min)
    for job_id, job in jobs.items():
        if runs.get(job_id):
            seconds = min(run["at"] for run in runs[job_id]) - job["created_at"].timestamp()
            verdict.pickup_seconds.append(seconds)
            if seconds > worst[0]:
                worst = (seconds, job_id, job["created_at"])
        if job["completed_at"] is not None:
            finished = (job["completed_at"] - job["created_at"]).total_seconds()
            verdict.finish_seconds_max = max(verdict.finish_seconds_max, finished)
    seconds, job_id, created = worst
    if job_id:
        at = created.timestamp()
        active = [f"{f.kind} {f.detail}".strip() for f in faults if f.started - 1 <= at <= f.ended + 1]
        verdict.worst_pickup = (seconds, job_id, active)


def _read_runs(path: Path) -> dict[int, list[dict[str, Any]]]:
    runs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            run = json.loads(line)
            runs[run["id"]].append(run)
    return runs


def _rows(jobs: dict[int, asyncpg.Record], ids: list[int]) -> str:
    return ", ".join(f"{i} {jobs[i]['status']} attempt {jobs[i]['attempts']}" for i in ids)


def _history(history: list[asyncpg.Record]) -> str:
    return "; ".join(
        f"{t['old_status']}->{t['new_status']} attempt {t['new_attempts']} by {t['new_worker'] or t['old_worker']}"
        f"{' (' + t['last_error'] + ')' if t['last_error'] and t['new_status'] != 'processing' else ''}"
        for t in history
    )
