"""A running job's children: spawning them, and reading what came of them (sql/migrations/0015).

A child is an ordinary job of the parent's table that acts for the parent's owner: it has its own
retries, limits and Realtime events. Each child has a key, unique among its parent's children; a
key given again returns the child made the first time, so a parent that runs again after a crash
spawns nothing twice. Without a key, a child's key is its place among this run's spawns, prefixed
by the times the parent was resumed: "0.1" is the second child of the first run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from reactor import rows
from reactor.job import LeaseLost
from reactor.store import JobStore

if TYPE_CHECKING:
    from reactor.job import Job

MAX_CHILDREN = 1000  # reactor.max_children() (tests/contract/test_constants.py)
_SPAWN_FIELDS = {"job_type", "payload", "key", "priority", "run_at", "max_attempts"}


@dataclass(frozen=True)
class Child:
    """What came of one child, as `Job.children()` reads it."""

    id: int
    key: str
    job_type: str
    status: str  # pending, processing, waiting, completed, failed or cancelled
    attempts: int
    result: Any
    error: str | None  # its last error (a completed child may have failed attempts before)
    completed_at: datetime | None


class Family:
    """The children of one run of one job, through the store."""

    def __init__(self, store: JobStore, job: Job) -> None:
        self._store = store
        self._job = job
        self.spawned = 0  # spawn requests this run, keyed or not

    async def spawn(self, children: Iterable[dict[str, Any]]) -> list[int]:
        items = [self._item(child) for child in children]
        if not items:
            return []
        if len(items) > MAX_CHILDREN:
            raise ValueError(f"a job spawns at most {MAX_CHILDREN} children, not {len(items)}")
        job = self._job
        answer = await self._store.spawn(job.table, job.id, job.lease_token, items)
        if answer.get("stale"):
            raise LeaseLost(f"job {job.id} no longer holds its lease; its children were not spawned")
        return list(answer["ids"])

    async def children(self) -> list[Child]:
        found = await self._store.children(self._job.table, self._job.id)
        return [
            Child(
                id=c["id"],
                key=c["key"],
                job_type=c["job_type"],
                status=c["status"],
                attempts=c["attempts"],
                result=c["result"],
                error=c["last_error"],
                completed_at=rows.timestamp(c["completed_at"]),
            )
            for c in found
        ]

    def _item(self, child: dict[str, Any]) -> dict[str, Any]:
        unknown = set(child) - _SPAWN_FIELDS
        if unknown:
            raise ValueError(f"a child takes {sorted(_SPAWN_FIELDS)}, not {sorted(unknown)}")
        item = checked(child)
        if item.get("key") is None:
            item["key"] = f"{self._job.resumed}.{self.spawned}"
        self.spawned += 1
        return item


def checked(child: dict[str, Any]) -> dict[str, Any]:
    """A child as reactor_spawn takes it, with a clear error for each value it would refuse."""
    job_type = child.get("job_type")
    if not isinstance(job_type, str) or not 1 <= len(job_type) <= 200:
        raise ValueError(f"a child's job_type is 1 to 200 characters of text, not {job_type!r}")
    payload = child.get("payload")
    item: dict[str, Any] = {"job_type": job_type, "payload": {} if payload is None else payload}
    key = child.get("key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200):
        raise ValueError(f"a child's key is 1 to 200 characters of text, not {key!r}")
    item["key"] = key
    priority = child.get("priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) or not -(2**31) <= priority < 2**31:
            raise ValueError(f"a child's priority is a 32-bit whole number, not {priority!r}")
        item["priority"] = priority
    run_at = child.get("run_at")
    if run_at is not None:
        if not isinstance(run_at, datetime) or run_at.tzinfo is None:
            raise ValueError("a child's run_at is a timezone-aware datetime")
        item["run_at"] = run_at.isoformat()
    attempts = child.get("max_attempts")
    if attempts is not None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 1000:
            raise ValueError(f"a child's max_attempts is from 1 to 1000, not {attempts!r}")
        item["max_attempts"] = attempts
    return item
