"""The jobs this worker is running: what the runner starts and finishes, and what the lease keeper
extends, confirms and, when a lease turns out stale, cancels; and the leases to hand back at
shutdown."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from reactor.handlers import Handler
from reactor.job import Job


@dataclass
class Running:
    job: Job
    handler: Handler
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    started: float = field(default_factory=time.monotonic)
    lost: bool = False  # the lease went to someone else, or the job was cancelled: never report
    cancelled: bool = False  # an operator or the job's owner cancelled it (sql/migrations/0013)
    released: bool = False  # cancelled by shutdown: hand back without spending the attempt
    confirmed: anyio.Event | None = None  # a hand-off: set once its confirmation is settled


class RunningJobs:
    def __init__(self) -> None:
        self._jobs: dict[tuple[str, int], Running] = {}
        self._emptied = anyio.Event()
        self.to_release: dict[str, list[dict[str, Any]]] = {}  # cancelled by shutdown, not yet handed back

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._jobs

    def __iter__(self) -> Iterator[Running]:
        return iter(list(self._jobs.values()))

    def add(self, running: Running) -> None:
        """A job starts. If this worker still runs an earlier attempt of it, that attempt's lease
        was reaped before the worker learned so: it is lost, as if another worker had claimed it."""
        key = (running.job.table, running.job.id)
        if key in self._jobs:
            self.lease_lost(*key)
        self._jobs[key] = running

    def remove(self, running: Running) -> None:
        key = (running.job.table, running.job.id)
        if self._jobs.get(key) is not running:
            return  # an earlier attempt, lost to a later one of this worker's (`add`)
        del self._jobs[key]
        if not self._jobs:
            self._emptied.set()
            self._emptied = anyio.Event()

    async def empty(self) -> None:
        """Return once no job is running."""
        if self._jobs:
            await self._emptied.wait()

    def release_later(self, table: str, lease: dict[str, Any]) -> None:
        """Hand this lease back at shutdown, with its attempt unspent."""
        self.to_release.setdefault(table, []).append(lease)

    def leases(self) -> dict[str, list[dict[str, Any]]]:
        """The leases this worker still holds, by table."""
        by_table: dict[str, list[dict[str, Any]]] = {}
        for (table, job_id), running in self._jobs.items():
            if not running.lost:
                by_table.setdefault(table, []).append({"id": job_id, "lease_token": running.job.lease_token})
        return by_table

    def lease_lost(
        self, table: str, job_id: int, cancelled: bool = False, lease_token: str | None = None
    ) -> None:
        """The job has a new owner, or was cancelled on request: stop the handler; its outcome is
        never reported (the row says what happened). With `lease_token`, only if the running
        attempt holds that lease: an answer about an earlier lease leaves a later attempt alone."""
        running = self._jobs.get((table, job_id))
        if running is None or running.lost or lease_token not in (None, running.job.lease_token):
            return
        running.lost, running.cancelled = True, cancelled
        running.scope.cancel()
        if running.confirmed is not None:
            running.confirmed.set()
        if cancelled:
            log = running.job.logger.bind(outcome="cancelled")
            log.warning("job cancelled on request: stopping the handler")
        else:
            log = running.job.logger.bind(outcome="lost")
            log.warning("lease lost: cancelling the job, it has a new owner")

    def confirmed(self, table: str, job_id: int) -> None:
        """A hand-off's confirmation was answered, or given up on: its outcome may be reported."""
        running = self._jobs.get((table, job_id))
        if running is not None and running.confirmed is not None:
            running.confirmed.set()

    def release_all(self) -> None:
        """Cancel every running job; each is handed back to pending without spending an attempt."""
        for running in self._jobs.values():
            running.released = True
            running.scope.cancel()
