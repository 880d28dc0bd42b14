"""What the overview derives from rows: per job type, the counts, the failure rate and the pickup
latency; per minute, the throughput; per worker, the jobs it runs now.

Pure functions of the rows the project returned, so they are tested without a stack. Throughput
and failures come from the jobs that finished in the window (`completed_at`), pickup latency from
when a job became due (`run_at`, or its insert if later) to when a worker started it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import quantiles
from typing import Any


def timestamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def pickup_seconds(row: dict[str, Any]) -> float | None:
    started, run_at, created = (timestamp(row.get(k)) for k in ("started_at", "run_at", "created_at"))
    if started is None or run_at is None or created is None:
        return None
    return max(0.0, (started - max(run_at, created)).total_seconds())


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (1 to 99), or None with no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class TypeRow:
    job_type: str
    pending: int = 0
    running: int = 0
    completed: int = 0  # in the window
    failed: int = 0  # in the window
    pickups: list[float] = field(default_factory=list)

    @property
    def failure_rate(self) -> float | None:
        finished = self.completed + self.failed
        return self.failed / finished if finished else None

    @property
    def pickup_p50(self) -> float | None:
        return percentile(self.pickups, 50)

    @property
    def pickup_p95(self) -> float | None:
        return percentile(self.pickups, 95)


def by_type(
    pending_by_type: dict[str, int], finished: list[dict[str, Any]], running: list[dict[str, Any]]
) -> list[TypeRow]:
    rows: dict[str, TypeRow] = {}

    def row(job_type: str) -> TypeRow:
        return rows.setdefault(job_type, TypeRow(job_type))

    for job_type, n in pending_by_type.items():
        row(job_type).pending = n
    for job in running:
        row(job["job_type"]).running += 1
    for job in finished:
        r = row(job["job_type"])
        if job["status"] == "failed":
            r.failed += 1
        else:
            r.completed += 1
        pickup = pickup_seconds(job)
        if pickup is not None:
            r.pickups.append(pickup)
    return sorted(rows.values(), key=lambda r: r.job_type)


@dataclass
class Minute:
    start: datetime
    completed: int = 0
    failed: int = 0


def per_minute(finished: list[dict[str, Any]], now: datetime, minutes: int) -> list[Minute]:
    """Completed and failed jobs in each of the last `minutes` whole minutes and the current one."""
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    series = [Minute(first + timedelta(minutes=i)) for i in range(minutes)]
    for job in finished:
        done = timestamp(job.get("completed_at"))
        if done is None or done < first:
            continue
        index = min(int((done - first).total_seconds() // 60), minutes - 1)
        if job["status"] == "failed":
            series[index].failed += 1
        else:
            series[index].completed += 1
    return series


@dataclass
class WorkerRow:
    worker: str
    jobs: list[dict[str, Any]]
    types: Counter[str]
    lease_ends: datetime | None  # the earliest lease among its jobs
    unconfirmed: int  # hand-offs it has not confirmed yet


def workers(running: list[dict[str, Any]]) -> list[WorkerRow]:
    """The workers holding leases now, from the running jobs' `locked_by`."""
    held: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in running:
        held[job.get("locked_by") or "?"].append(job)
    found = []
    for worker, jobs in sorted(held.items()):
        leases = [t for t in (timestamp(j.get("lease_expires_at")) for j in jobs) if t is not None]
        found.append(
            WorkerRow(
                worker,
                sorted(jobs, key=lambda j: j["id"]),
                Counter(j["job_type"] for j in jobs),
                min(leases) if leases else None,
                sum(1 for j in jobs if not j.get("started_at")),
            )
        )
    return found
