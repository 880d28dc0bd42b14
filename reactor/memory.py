"""`MemoryStore`: the worker's calls answered from memory, for fast tests of the worker itself.

It keeps the contract the worker relies on (sql/schema.sql), and tests/contract/test_store.py runs
one suite against it and against the real functions over the local stack: claims in priority,
then run_at, then id order, never before run_at, never more than asked; every outcome, heartbeat
and progress write fenced by the lease token; a failed attempt back to pending at its retry time,
or to `failed` when it is permanent or the attempts are spent; a release that gives the attempt
back; expired leases reaped by every tick; a schedule's times enqueued once each, within its
catch-up window, in increasing order; children spawned once per key, and a waiting parent resumed
by the outcome of its last child; log lines written only under the lease, at most 1,000 a job; a
heartbeat naming the stale leases of cancelled jobs. It has no Realtime and so no hand-offs (a standby is
accepted and never used), no statistics beyond counts, and no row-level security: it is a test
double for the worker, not a database.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reactor.family import MAX_CHILDREN
from reactor.job_logs import MAX_LOG_LINES
from reactor.store import MAX_BATCH, Rejected

_BACKOFF_BASE, _BACKOFF_CAP = 2.0, 3600.0  # reactor.backoff()'s defaults


@dataclass
class _Row:
    id: int
    job_type: str
    payload: Any
    priority: int
    run_at: datetime
    max_attempts: int
    user_id: str | None
    created_at: datetime
    status: str = "pending"
    attempts: int = 0
    result: Any = None
    last_error: str | None = None
    progress: int = 0
    progress_message: str | None = None
    locked_by: str | None = None
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    parent_id: int | None = None
    child_key: str | None = None
    resumed: int = 0


_UNFINISHED = ("pending", "processing", "waiting")


@dataclass
class _Schedule:
    name: str
    table: str
    job_type: str
    cron: str
    time_zone: str
    payload: Any
    priority: int
    max_attempts: int
    catch_up_seconds: int
    fired_through: datetime
    last_run_at: datetime | None = None
    last_job_id: int | None = None

    def listed(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table": self.table,
            "job_type": self.job_type,
            "cron": self.cron,
            "time_zone": self.time_zone,
            "catch_up_seconds": self.catch_up_seconds,
            "engine": "worker",
            "fired_through": self.fired_through.isoformat(),
            "last_run_at": None if self.last_run_at is None else self.last_run_at.isoformat(),
            "last_job_id": self.last_job_id,
        }


class MemoryStore:
    def __init__(self, tables: Sequence[str] = ("jobs",)) -> None:
        self.tables: dict[str, dict[int, _Row]] = {table: {} for table in tables}
        self.schedules: dict[str, _Schedule] = {}
        self._ids = itertools.count(1)
        self.calls: Counter[tuple[str, str]] = Counter()  # (function, outcome) -> count, as Store's
        self.limits: dict[tuple[str, str], dict[str, Any]] = {}  # (table, job type) -> its limits
        self._starts: dict[tuple[str, str], list[datetime]] = {}  # the latest claims, for rates
        self.logs: list[dict[str, Any]] = []  # public.job_logs' rows

    async def aclose(self) -> None:
        pass

    def row(self, table: str, job_id: int) -> dict[str, Any]:
        """A job's row as the database would hold it (for tests)."""
        return dict(vars(self.tables[table][job_id]))

    async def enqueue(self, table: str, job: dict[str, Any]) -> int:
        return self._insert(self._table(f"post {table}", table), job)

    def _insert(self, rows: dict[int, _Row], job: dict[str, Any]) -> int:
        now = _now()
        row = _Row(
            id=next(self._ids),
            job_type=job["job_type"],
            payload=job.get("payload", {}),
            priority=job.get("priority", 0),
            run_at=_time(job.get("run_at")) or now,
            max_attempts=job.get("max_attempts", 5),
            user_id=job.get("user_id"),
            created_at=now,
        )
        rows[row.id] = row
        return row.id

    async def claim(
        self,
        table: str,
        worker: str,
        job_types: Sequence[str],
        limit: int,
        lease_seconds: int,
        standby_seconds: int = 0,
        heard: int | None = None,
    ) -> list[dict[str, Any]]:
        self._table("reactor_claim_jobs", table)
        limit = min(limit, MAX_BATCH)  # as Store sends it
        _check_range("reactor_claim_jobs", "p_limit", limit, 1, MAX_BATCH)
        return self._claim(table, worker, job_types, limit, lease_seconds)

    async def stand_down(self, table: str, worker: str) -> None:
        self._table("reactor_stand_down", table)

    async def worker_topic(self, worker: str) -> str:
        return f"reactor:{worker}"

    async def declare_limits(self, table: str, limits: dict[str, dict[str, int]]) -> dict[str, Any]:
        self._table("reactor_declare_limits", table)
        for job_type, declared in limits.items():
            self.limits.setdefault((table, job_type), {**declared, "paused": False})
        return {job_type: dict(found) for (t, job_type), found in self.limits.items() if t == table}

    async def heartbeat(self, table: str, leases: list[dict[str, Any]], lease_seconds: int) -> dict[str, Any]:
        rows = self._table("reactor_heartbeat", table)
        extended = []
        for row in self._held(rows, leases):
            row.lease_expires_at = _now() + timedelta(seconds=lease_seconds)
            row.started_at = row.started_at or _now()
            extended.append(row.id)
        stale = _stale(leases, extended)
        cancelled = [i for i in stale if (row := rows.get(i)) is not None and row.status == "cancelled"]
        return {"extended": sorted(extended), "stale": stale} | (
            {"cancelled": cancelled} if cancelled else {}
        )

    async def complete(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        rows = self._table("reactor_complete", table)
        results = {item["id"]: item.get("result") for item in jobs}
        done = []
        for row in self._held(rows, jobs):
            row.status, row.result, row.progress, row.completed_at = "completed", results[row.id], 100, _now()
            row.lease_token = row.lease_expires_at = None
            done.append(row.id)
        resumed = self._finished(rows, done)
        return {"completed": sorted(done), "stale": _stale(jobs, done)} | resumed

    async def fail(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        rows = self._table("reactor_fail", table)
        items = {item["id"]: item for item in jobs}
        retried, dead = [], []
        for row in self._held(rows, jobs):
            item = items[row.id]
            if item.get("permanent") or row.attempts >= row.max_attempts:
                row.status, row.completed_at = "failed", _now()
                dead.append(row.id)
            else:
                retry_at = _time(item.get("retry_at")) or _now() + _backoff(row.attempts)
                row.status, row.run_at = "pending", max(retry_at, _now())
                retried.append(row.id)
            row.last_error = item["error"][:10000]
            row.locked_by = row.lease_token = row.lease_expires_at = None
        resumed = self._finished(rows, dead)
        return {
            "retried": sorted(retried),
            "failed": sorted(dead),
            "stale": _stale(jobs, retried + dead),
        } | resumed

    async def release(self, table: str, leases: list[dict[str, Any]]) -> dict[str, Any]:
        rows = self._table("reactor_release", table)
        done = []
        for row in self._held(rows, leases):
            row.status, row.attempts, row.started_at = "pending", max(row.attempts - 1, 0), None
            row.locked_by = row.lease_token = row.lease_expires_at = None
            done.append(row.id)
        return {"released": sorted(done), "stale": _stale(leases, done)}

    async def snooze(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        rows = self._table("reactor_snooze", table)
        done, until = [], {item["id"]: _time(item.get("retry_at")) for item in jobs}
        for row in self._held(rows, jobs):
            row.status, row.attempts = "pending", max(row.attempts - 1, 0)
            row.run_at = max(until[row.id] or _now(), _now())
            row.locked_by = row.lease_token = row.lease_expires_at = None
            done.append(row.id)
        return {"snoozed": sorted(done), "stale": _stale(jobs, done)}

    async def spawn(
        self, table: str, parent_id: int, lease_token: str, children: list[dict[str, Any]]
    ) -> dict[str, Any]:
        rows = self._table("reactor_spawn", table)
        _check_range("reactor_spawn", "number of children", len(children), 1, MAX_CHILDREN)
        held = self._held(rows, [{"id": parent_id, "lease_token": lease_token}])
        if not held:
            return {"stale": True}
        parent, now = held[0], _now()
        mine = {r.child_key: r.id for r in rows.values() if r.parent_id == parent_id}
        for child in children:
            if child["key"] in mine:
                continue
            if len(mine) >= MAX_CHILDREN:
                raise Rejected(f"reactor_spawn: job {parent_id} would have too many children (HTTP 400)", 400)
            child_id = self._insert(
                rows,
                {
                    "job_type": child["job_type"],
                    "payload": child.get("payload", {}),
                    "priority": child.get("priority", parent.priority),
                    "run_at": max(_time(child.get("run_at")) or now, now),
                    "max_attempts": child.get("max_attempts", 5),
                    "user_id": parent.user_id,
                },
            )
            rows[child_id].parent_id, rows[child_id].child_key = parent_id, child["key"]
            mine[child["key"]] = child_id
        return {"ids": [mine[child["key"]] for child in children]}

    async def wait(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        rows = self._table("reactor_wait", table)
        waiting, resumed = [], []
        for row in self._held(rows, jobs):
            row.attempts = max(row.attempts - 1, 0)
            row.locked_by = row.lease_token = row.lease_expires_at = None
            if self._open_children(rows, row.id):
                row.status = "waiting"
                waiting.append(row.id)
            else:
                row.status, row.run_at, row.resumed = "pending", _now(), row.resumed + 1
                resumed.append(row.id)
        return {"waiting": waiting, "resumed": resumed, "stale": _stale(jobs, waiting + resumed)}

    async def children(self, table: str, parent_id: int) -> list[dict[str, Any]]:
        rows = self._table("reactor_children", table)
        return [
            {
                "id": r.id,
                "key": r.child_key,
                "job_type": r.job_type,
                "status": r.status,
                "attempts": r.attempts,
                "result": r.result,
                "last_error": r.last_error,
                "completed_at": None if r.completed_at is None else r.completed_at.isoformat(),
            }
            for r in sorted(rows.values(), key=lambda r: r.id)
            if r.parent_id == parent_id
        ][:MAX_CHILDREN]

    async def log(self, table: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        rows = self._table("reactor_log", table)
        _check_range("reactor_log", "number of lines", len(lines), 1, MAX_BATCH)
        written = dropped = 0
        stale: set[int] = set()
        for item in lines:
            if not self._held(rows, [item]):
                stale.add(item["id"])
                continue
            row = rows[item["id"]]
            if (
                sum(1 for g in self.logs if g["job_table"] == table and g["job_id"] == row.id)
                >= MAX_LOG_LINES
            ):
                dropped += 1
                continue
            logged_at = min(_time(item.get("logged_at")) or _now(), _now())
            self.logs.append(
                {
                    "job_table": table,
                    "job_id": row.id,
                    "user_id": row.user_id,
                    "attempt": row.attempts,
                    "level": item["level"],
                    "message": item["message"][:2000],
                    "logged_at": logged_at,
                }
            )
            written += 1
        return {"written": written, "dropped": dropped, "stale": sorted(stale)}

    def _finished(self, rows: dict[int, _Row], done: list[int]) -> dict[str, int]:
        """As the job_finished trigger: resume each waiting parent whose last child is among `done`;
        {"resumed": n} when there are any."""
        resumed = 0
        for parent_id in {rows[i].parent_id for i in done if rows[i].parent_id is not None}:
            parent = rows.get(parent_id)
            if parent is not None and parent.status == "waiting" and not self._open_children(rows, parent_id):
                parent.status, parent.run_at, parent.resumed = "pending", _now(), parent.resumed + 1
                resumed += 1
        return {"resumed": resumed} if resumed else {}

    @staticmethod
    def _open_children(rows: dict[int, _Row], parent_id: int) -> bool:
        return any(r.parent_id == parent_id and r.status in _UNFINISHED for r in rows.values())

    async def progress(
        self, table: str, job_id: int, lease_token: str, percent: int, message: str | None
    ) -> bool:
        rows = self._table("reactor_progress", table)
        _check_range("reactor_progress", "p_progress", percent, 0, 100)
        held = self._held(rows, [{"id": job_id, "lease_token": lease_token}])
        for row in held:
            row.progress, row.progress_message = percent, None if message is None else message[:1000]
        return bool(held)

    async def tick(
        self,
        table: str,
        worker: str,
        job_types: Sequence[str],
        limit: int,
        lease_seconds: int,
        *,
        stats: bool,
        probe: bool,
        old_probe: int | None,
        standby_seconds: int = 0,
    ) -> dict[str, Any]:
        rows = self._table("reactor_tick", table)
        limit = min(limit, MAX_BATCH)  # as Store sends it
        _check_range("reactor_tick", "p_limit", limit, 0, MAX_BATCH)
        reaped = self._reap(rows)
        claimed = self._claim(table, worker, job_types, limit, lease_seconds) if limit else []
        now = _now()
        later = [
            r.run_at
            for r in rows.values()
            if r.status == "pending" and r.run_at > now and r.job_type in job_types
        ]
        return {
            "reaped": reaped,
            "claimed": claimed,
            "next_due_seconds": round((min(later) - now).total_seconds(), 3) if later else None,
            "stats": await self.stats(table) if stats else None,
            "probe": None,
            "withheld": 0,  # no Realtime here, so no budget
        }

    async def stats(self, table: str) -> dict[str, Any]:
        rows = self._table("reactor_stats", table)
        counts = Counter(row.status for row in rows.values())
        statuses = ("pending", "processing", "waiting", "completed", "failed", "cancelled")
        return {"table": table, "counts": {status: counts[status] for status in statuses}}

    async def delete_probe(self, table: str, probe_id: int) -> None:
        self._table(f"delete {table}", table)

    async def fire_schedules(
        self,
        worker: str,
        tables: dict[str, list[str]],
        declare: list[dict[str, Any]],
        fire: list[dict[str, Any]],
    ) -> dict[str, Any]:
        self.calls[("reactor_fire_schedules", "ok")] += 1
        now = _now()
        for item in declare:
            self._declare(item, now)
        fired = [self._fire(item, now) for item in sorted(fire, key=lambda item: item["name"])]
        listed = [
            s.listed()
            for s in sorted(self.schedules.values(), key=lambda s: s.name)
            if s.job_type in tables.get(s.table, [])
        ]
        return {"now": now.isoformat(), "fired": fired, "schedules": listed}

    def _declare(self, item: dict[str, Any], now: datetime) -> None:
        if item["table"] not in self.tables:
            raise Rejected(f'reactor_fire_schedules: unknown job table "{item["table"]}" (HTTP 400)', 400)
        old = self.schedules.get(item["name"])
        fresh = old is None or (old.cron, old.time_zone) != (item["cron"], item["time_zone"])
        self.schedules[item["name"]] = _Schedule(
            name=item["name"],
            table=item["table"],
            job_type=item["job_type"],
            cron=item["cron"],
            time_zone=item["time_zone"],
            payload=item["payload"],
            priority=item["priority"],
            max_attempts=item["max_attempts"],
            catch_up_seconds=item["catch_up_seconds"],
            fired_through=now if old is None else max(old.fired_through, now) if fresh else old.fired_through,
            last_run_at=None if old is None else old.last_run_at,
            last_job_id=None if old is None else old.last_job_id,
        )

    def _fire(self, item: dict[str, Any], now: datetime) -> dict[str, Any]:
        schedule = self.schedules.get(item["name"])
        answer: dict[str, Any] = {"name": item["name"], "current": False, "enqueued": [], "skipped": None}
        if schedule is None or (schedule.cron, schedule.time_zone) != (item["cron"], item["time_zone"]):
            return answer
        window_start = now - timedelta(seconds=schedule.catch_up_seconds)
        if schedule.fired_through < window_start:
            answer["skipped"] = {"from": schedule.fired_through.isoformat(), "to": window_start.isoformat()}
            schedule.fired_through = window_start
        for at in sorted({_time(t) for t in item["times"]}):
            if schedule.fired_through < at <= now:
                job_id = self._insert(
                    self.tables[schedule.table],
                    {
                        "job_type": schedule.job_type,
                        "payload": schedule.payload,
                        "priority": schedule.priority,
                        "max_attempts": schedule.max_attempts,
                        "run_at": at,
                    },
                )
                answer["enqueued"].append({"at": at.isoformat(), "id": job_id})
                schedule.fired_through = schedule.last_run_at = at
                schedule.last_job_id = job_id
        return {**answer, "current": True}

    def _table(self, function: str, table: str) -> dict[int, _Row]:
        if table not in self.tables:
            self.calls[(function, "rejected")] += 1
            raise Rejected(f'{function}: unknown job table "{table}" (HTTP 400)', 400)
        self.calls[(function, "ok")] += 1
        return self.tables[table]

    def _claim(
        self, table: str, worker: str, job_types: Sequence[str], limit: int, lease_seconds: int
    ) -> list[dict[str, Any]]:
        """As the SQL claims: limited types first, each within its limits, then the others."""
        rows, now = self.tables[table], _now()
        limited = sorted(t for t in job_types if (table, t) in self.limits)
        picked: list[_Row] = []
        for job_type in limited:
            picked += self._within_limits(table, job_type, limit - len(picked), now)
        free = [t for t in job_types if t not in limited]
        due = [r for r in rows.values() if r.status == "pending" and r.run_at <= now and r.job_type in free]
        due.sort(key=lambda r: (-r.priority, r.run_at, r.id))
        picked += due[: max(limit - len(picked), 0)]
        claimed = []
        for row in picked:
            row.status, row.attempts, row.locked_by = "processing", row.attempts + 1, worker
            row.lease_token, row.lease_expires_at = str(uuid.uuid4()), now + timedelta(seconds=lease_seconds)
            row.started_at = now
            claimed.append(_claimed(row))
        return claimed

    def _within_limits(self, table: str, job_type: str, room: int, now: datetime) -> list[_Row]:
        limits, rows = self.limits[(table, job_type)], self.tables[table].values()
        if limits.get("paused"):
            return []
        running = [r for r in rows if r.status == "processing" and r.job_type == job_type]
        if limits.get("concurrency") is not None:
            room = min(room, limits["concurrency"] - len(running))
        starts = self._starts.setdefault((table, job_type), [])
        if limits.get("rate") is not None:
            starts[:] = [s for s in starts if s > now - timedelta(seconds=limits["per_seconds"])]
            room = min(room, limits["rate"] - len(starts))
        due = sorted(
            (r for r in rows if r.status == "pending" and r.job_type == job_type and r.run_at <= now),
            key=lambda r: (-r.priority, r.run_at, r.id),
        )
        if limits.get("per_user") is not None:
            busy = Counter(r.user_id for r in running)
            turns: Counter[Any] = Counter()
            ranked = []
            for r in due:
                turns[r.user_id] += 1
                if turns[r.user_id] <= limits["per_user"] - busy[r.user_id]:
                    ranked.append((-r.priority, turns[r.user_id], r.run_at, r.id, r))
            due = [entry[-1] for entry in sorted(ranked, key=lambda e: e[:4])]
        picked = due[: max(room, 0)]
        if limits.get("rate") is not None:
            starts += [now] * len(picked)
        return picked

    def _held(self, rows: dict[int, _Row], leases: list[dict[str, Any]]) -> list[_Row]:
        """The rows of these leases that are still held with these tokens, in the batch's order; a
        batch naming a job twice is refused whole, as reactor.batch_items() refuses it."""
        seen: set[int] = set()
        for n, lease in enumerate(leases):
            if lease["id"] in seen:
                raise Rejected(f"item {n}: job {lease['id']} appears twice in one batch (HTTP 400)", 400)
            seen.add(lease["id"])
        return [
            row
            for lease in leases
            if (row := rows.get(lease["id"])) is not None
            and row.status == "processing"
            and row.lease_token == lease["lease_token"]
        ]

    def _reap(self, rows: dict[int, _Row]) -> dict[str, list[int]]:
        now, requeued, dead = _now(), [], []
        for row in rows.values():
            if row.status != "processing" or row.lease_expires_at is None or row.lease_expires_at >= now:
                continue
            spent = row.attempts >= row.max_attempts
            row.last_error = (
                f"lease expired: worker {row.locked_by} stopped reporting during attempt {row.attempts} of "
                f"{row.max_attempts}{'; attempts exhausted' if spent else ''}"
            )
            if spent:
                row.status, row.completed_at = "failed", now
                dead.append(row.id)
            else:
                row.status, row.run_at = "pending", now + _backoff(row.attempts)
                requeued.append(row.id)
            row.locked_by = row.lease_token = row.lease_expires_at = None
        self._finished(rows, dead)
        return {"requeued": sorted(requeued), "failed": sorted(dead)}


def _claimed(row: _Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_type": row.job_type,
        "payload": row.payload,
        "priority": row.priority,
        "attempt": row.attempts,
        "max_attempts": row.max_attempts,
        "lease_token": row.lease_token,
        "run_at": row.run_at.isoformat(),
        "created_at": row.created_at.isoformat(),
        "user_id": row.user_id,
        "resumed": row.resumed,
        "parent_id": row.parent_id,
    }


def _stale(items: list[dict[str, Any]], done: list[int]) -> list[int]:
    return sorted({item["id"] for item in items} - set(done))


def _check_range(function: str, name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise Rejected(f"{function}: {name} must be between {low} and {high}, got {value} (HTTP 400)", 400)


def _backoff(attempt: int) -> timedelta:
    ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (min(max(attempt, 1), 60) - 1))
    return timedelta(seconds=random.uniform(0, ceiling))


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)
