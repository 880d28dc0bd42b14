"""Runs the jobs the dispatcher starts and settles what came of each.

One job: the handler is called under its timeout (executor.py), its progress written through to
the row, and its outcome submitted to the reporter, fenced by the lease token. A job whose lease
went to another worker is never reported; one cancelled by shutdown is handed back with its
attempt unspent; a hand-off's outcome waits until its confirmation is settled, since the database
refuses it before. A row that cannot be run fails for good with the reason, alone.

Jobs run on long-lived runner tasks, one per slot ever used, fed by a queue: spawning a task per
job cost more than a no-op job itself. The queue is asyncio's (the worker runs on asyncio, which
the Realtime client requires): handing over an item costs one future, where anyio's memory stream
also builds a receiver record, an event and task information for every item.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskGroup
from loguru import logger

from reactor import executor, rows
from reactor.executor import Middleware, Outcome
from reactor.family import Family
from reactor.handlers import Handler
from reactor.job import Job
from reactor.job_logs import JobLog
from reactor.metrics import Metrics
from reactor.redact import Redactor
from reactor.reporter import Recorded, Report, Reporter
from reactor.retry import RetryPolicy
from reactor.running import Running, RunningJobs
from reactor.standby import Standby
from reactor.store import JobStore, StoreError
from reactor.wakeups import Wakeups


class JobRunner:
    def __init__(
        self,
        worker_id: str,
        store: JobStore,
        reporter: Reporter,
        running: RunningJobs,
        policy: RetryPolicy,
        redactor: Redactor,
        metrics: Metrics,
        schedule: Callable[[str, datetime], None],
        wakeups: Wakeups,
        standby: Standby,
        middleware: Sequence[Middleware] = (),
        cancelled: Recorded | None = None,
    ) -> None:
        self._worker_id = worker_id
        self._store = store
        self._reporter = reporter
        self._running = running
        self._policy = policy
        self._redactor = redactor  # progress messages are stored in a row its owner reads
        self._metrics = metrics
        self._schedule = schedule  # wake again when a retry falls due
        self._wakeups = wakeups
        self._standby = standby
        self._middleware = tuple(middleware)  # around every handler call, first registered outermost
        self._cancelled = cancelled  # completion hooks: told of a running job cancelled on request
        self._queue: asyncio.Queue[Running | None] = asyncio.Queue()  # None: a runner's cue to return
        self._runners = 0
        self._idle_runners = 0  # runners not assigned a job: each takes the next one queued

    def start(
        self, job: Job, handler: Handler, group: TaskGroup, confirmed: anyio.Event | None = None
    ) -> None:
        """Run `job` at once (the caller holds a free slot for it); `confirmed`: a hand-off's."""
        job.max_attempts = executor.max_attempts(handler, job.max_attempts)
        job.log_context = {
            "job_id": job.id,
            "table": job.table,
            "job_type": job.job_type,
            "attempt": job.attempt,
            "worker_id": self._worker_id,
        }
        job._services = self
        running = Running(job, handler, confirmed=confirmed)
        self._running.add(running)
        if confirmed is not None:
            self._metrics.events["hand_offs"] += 1
        if job.run_at is not None:
            pickup = (datetime.now(UTC) - job.run_at).total_seconds()
            self._metrics.pickup_seconds.observe((job.table,), max(pickup, 0.0))
        if self._idle_runners:
            self._idle_runners -= 1
        else:
            self._runners += 1
            group.start_soon(self._runner, name="job runner")
        self._queue.put_nowait(running)

    def close(self) -> None:
        """Let every runner return once the jobs already queued have run."""
        for _ in range(self._runners):
            self._queue.put_nowait(None)

    def unreadable(self, table: str, exc: rows.Unreadable) -> None:
        """A row that cannot be run fails for good with the reason; the rest of its batch runs."""
        if exc.lease is None:
            logger.bind(table=table).error(f"{exc}; the reaper will hand it back")
            return
        job = Job(exc.lease["id"], table, "", None, 0, 0, exc.lease["lease_token"])
        job.log_context = {"job_id": job.id, "table": table, "worker_id": self._worker_id}
        self._metrics.jobs[(table, "", "failed")] += 1
        item = {**exc.lease, "error": str(exc), "permanent": True}
        self._reporter.submit(Report("fail", table, item, job, {"outcome": "failed"}))

    async def _runner(self) -> None:
        while (running := await self._queue.get()) is not None:
            await self._execute(running)
            self._idle_runners += 1

    async def _execute(self, running: Running) -> None:
        job, handler = running.job, running.handler
        outcome: Outcome | None = None
        if handler.timeout:
            running.scope.deadline = anyio.current_time() + handler.timeout
        with running.scope:
            outcome = await executor.call(job, handler, self._policy, self._middleware)
        if outcome is None and running.scope.cancelled_caught and not (running.lost or running.released):
            outcome = executor.timed_out(job, handler, self._policy)
        if running.confirmed is not None:
            await running.confirmed.wait()  # an unconfirmed hand-off's outcome would be refused
        try:
            self._settle(running, outcome)
        finally:
            self._running.remove(running)
            if self._standby.spent(job.table):
                self._wakeups.later(job.table)  # a slot is free and no hand-off can reach it: offer it
            if self._wakeups.pending():
                self._wakeups.nudge()

    def _settle(self, running: Running, outcome: Outcome | None) -> None:
        job = running.job
        duration = time.monotonic() - running.started
        if running.lost:
            outcome_name = "cancelled" if running.cancelled else "lost"
            self._metrics.jobs[(job.table, job.job_type, outcome_name)] += 1
            if running.cancelled and self._cancelled is not None:
                self._cancelled(job, "cancelled", {})  # the database cancelled it before it told us
            return
        if running.released or outcome is None:
            self._metrics.jobs[(job.table, job.job_type, "released")] += 1
            self._running.release_later(job.table, {"id": job.id, "lease_token": job.lease_token})
            job.logger.bind(outcome="released").info("job cancelled by shutdown; handing it back")
            return
        self._metrics.jobs[(job.table, job.job_type, outcome.kind)] += 1
        self._metrics.handler_seconds.observe((job.table, job.job_type), duration)
        fields = {"outcome": outcome.kind, "duration_ms": round(duration * 1000, 1)}
        item = {"id": job.id, "lease_token": job.lease_token, **outcome.item()}
        kind = {"completed": "complete", "snoozed": "snooze", "waiting": "wait"}.get(outcome.kind, "fail")
        self._reporter.submit(Report(kind, job.table, item, job, fields))
        if outcome.retry_at is not None:
            self._schedule(job.table, outcome.retry_at)

    async def progress(self, job: Job, percent: int, message: str | None) -> bool:
        """`job.set_progress` (the runner serves as every job's JobServices)."""
        if message is not None:
            message = self._redactor.storable(message)
        try:
            held = await self._store.progress(job.table, job.id, job.lease_token, percent, message)
        except StoreError as exc:
            job.logger.warning(f"could not write progress: {exc}")
            return True
        if not held:
            self._running.lease_lost(job.table, job.id, lease_token=job.lease_token)
        return held

    def family(self, job: Job) -> Family:
        return Family(self._store, job)

    def job_log(self, job: Job) -> JobLog:
        return JobLog(self._store, self._redactor, job)
