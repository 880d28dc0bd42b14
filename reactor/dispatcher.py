"""The claim loop and the jobs it runs.

Wake-ups (Realtime events, timers, freed capacity) only mark tables as worth a look and set one
event; the loop claims once per event, so a burst of a thousand inserts costs a handful of claims.
A claim never asks for more jobs than there are free slots, and one claim runs at a time, so the
worker never holds a job it cannot start at once. The poller's periodic sweeps are ticks (see
ticker.py): the same claim, with the worker's other chores done in the same request.

Hand-offs (sql/migrations/0007) need no claim: while Realtime is healthy every claim offers the
slots it leaves free, an insert takes one, and the listener brings its row here (`take`). A
hand-off that finds no free slot (a claim for the same slots was in flight) is handed straight
back, so concurrency stays a hard limit.

Jobs run on long-lived runner tasks, one per slot ever used, fed by a queue: spawning a task per
job cost more than a no-op job itself. The queue is asyncio's (the worker runs on asyncio, which
the Realtime client requires): handing over an item costs one future, where anyio's memory stream
also builds a receiver record, an event and task information for every item.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup
from loguru import logger

from reactor import executor, rows
from reactor.config import Config
from reactor.executor import Outcome
from reactor.handlers import Registry
from reactor.job import Job
from reactor.metrics import Metrics
from reactor.redact import Redactor
from reactor.reporter import Report, Reporter
from reactor.retry import RetryPolicy
from reactor.running import Running, RunningJobs
from reactor.store import MAX_BATCH, MAX_STANDBY_SLOTS, Rejected, Store, StoreError
from reactor.ticker import Ticker


class Dispatcher:
    def __init__(
        self,
        config: Config,
        store: Store,
        registry: Registry,
        reporter: Reporter,
        metrics: Metrics,
        ticker: Ticker,
        schedule: Any,
        redactor: Redactor,
        running: RunningJobs,
        confirm: Callable[[str, dict[str, Any]], None],
        standby_seconds: int,
    ) -> None:
        self._config = config
        self._store = store
        self._registry = registry
        self._reporter = reporter
        self._metrics = metrics
        self._ticker = ticker
        self._schedule = schedule  # callable(table, datetime): wake again when a retry falls due
        self._redactor = redactor  # progress messages are stored in a row its owner reads
        self._policy = RetryPolicy(
            config.retry_base_seconds, max(config.retry_cap_seconds, config.retry_base_seconds)
        )
        self.running = running
        self._confirm = confirm  # sends a hand-off's confirmation (the lease keeper)
        self._jobs: asyncio.Queue[Running | None] = asyncio.Queue()  # None: a runner's cue to return
        self._runners = 0
        self._idle_runners = 0  # runners not assigned a job: each takes the next one queued
        self._due: set[str] = set()
        self._tick_due: set[str] = set()
        self._wake = anyio.Event()
        self._claiming = True
        self._drained = anyio.Event()
        self.to_release: dict[str, list[dict[str, Any]]] = {}  # cancelled by shutdown, not yet handed back
        self.api_ok = False  # the last claim reached the API (readiness)
        self._api_complaint = ""
        # Hand-offs (sql/migrations/0007): while `standing_by(table)` holds, every claim offers the
        # slots it leaves free for `standby_seconds` (0: no hand-offs).
        self.standing_by: Callable[[str], bool] = lambda table: False
        self._standby_seconds = standby_seconds
        # table -> the slots this worker's standby still has, as far as it knows: what the last
        # claim offered (the SQL's formula) less the hand-offs since. Absent: no standby.
        self._offered: dict[str, int] = {}
        self._group: TaskGroup | None = None

    @property
    def claiming(self) -> bool:
        return self._claiming

    def store_calls(self) -> Counter[tuple[str, str]]:
        return self._store.calls

    def free(self) -> int:
        return self._config.concurrency - len(self.running)

    def wake(self, table: str | None = None) -> None:
        self._due.update([table] if table else self._registry.tables())
        self._wake.set()

    def tick(self) -> None:
        """Sweep every table with a tick, which also does the worker's periodic chores."""
        self._tick_due.update(self._registry.tables())
        self._wake.set()

    def stop_claiming(self) -> None:
        self._claiming = False
        self._wake.set()
        if not self.running:
            self._drained.set()

    async def drained(self) -> None:
        await self._drained.wait()

    def take(self, table: str, record: dict[str, Any]) -> None:
        """Start a job the database handed to this worker on insert; its Realtime record is the
        claim. The hand-off is confirmed at once, and its outcome reported only after that."""
        try:
            job = rows.read(table, record, attempt_column="attempts")
        except rows.Unreadable as exc:
            if exc.lease is not None and (table, exc.lease["id"]) not in self.running:
                self._took_slot(table)
            self._unreadable(table, exc)
            return
        lease = {"id": job.id, "lease_token": job.lease_token}
        if (table, job.id) in self.running:
            return
        self._took_slot(table)
        if not self._claiming or self._group is None or self._registry.get(table, job.job_type) is None:
            self.to_release.setdefault(table, []).append(lease)  # handed back at shutdown
            return
        if self.free() <= 0:
            self._group.start_soon(self._hand_back, table, lease)
            self._due.add(table)  # claimed again when a slot frees
            return
        self._start(job, self._group, confirmed=anyio.Event())
        self._confirm(table, lease)

    def _took_slot(self, table: str) -> None:
        """A hand-off took one of the slots this worker's standby offered."""
        if table in self._offered:
            self._offered[table] = max(self._offered[table] - 1, 0)

    async def run(self, task_group: TaskGroup) -> None:
        self._group = task_group
        try:
            while self._claiming:
                await self._wake.wait()
                self._wake = anyio.Event()
                tables, self._due = self._due, set()
                ticks, self._tick_due = self._tick_due, set()
                for table in sorted(tables | ticks):
                    if not self._claiming:
                        break
                    if table not in ticks and self.free() <= 0:
                        self._due.add(table)  # claimed again when a slot frees
                        continue
                    await self._claim(table, task_group, tick=table in ticks)
            await self._stand_down()
        finally:
            for _ in range(self._runners):  # after the jobs already queued
                self._jobs.put_nowait(None)

    async def _runner(self) -> None:
        while (running := await self._jobs.get()) is not None:
            await self._execute(running)
            self._idle_runners += 1

    async def _claim(self, table: str, task_group: TaskGroup, tick: bool) -> None:
        limit = min(max(self.free(), 0), MAX_BATCH)  # a full answer must read as one
        job_types = self._registry.job_types(table)
        standby = self._standby_seconds if self.standing_by(table) else 0
        try:
            if tick:
                claimed = await self._ticker.tick(table, job_types, limit, standby)
            else:
                claimed = await self._store.claim(
                    table, self._config.worker_id, job_types, limit, self._config.lease_seconds, standby
                )
        except StoreError as exc:
            self._complain(exc)
            return
        if standby:
            offer = min(limit - len(claimed), MAX_STANDBY_SLOTS)
            if tick:  # a tick's claim never raises the standby (sql/migrations/0007)
                offer = min(offer, self._offered.get(table, 0))
            self._offered[table] = offer
        else:
            self._offered.pop(table, None)  # a claim without a standby withdraws it
        if not self.api_ok:
            logger.info(f"claiming from table {table}")
        self.api_ok, self._api_complaint = True, ""
        for row in claimed:
            try:
                job = rows.read(table, row)
            except rows.Unreadable as exc:
                self._unreadable(table, exc)
                continue
            self._start(job, task_group)
        if limit and len(claimed) == limit:
            self._due.add(table)  # a full batch: more are probably waiting

    def _complain(self, exc: StoreError) -> None:
        self.api_ok = False
        message = str(exc)
        if message != self._api_complaint:
            hint = ""
            if isinstance(exc, Rejected) and exc.status in (401, 403):
                hint = " (check SUPABASE_SERVICE_ROLE_KEY)"
            elif isinstance(exc, Rejected) and "Could not find the function public.reactor_" in message:
                hint = (
                    " (reactor's migrations are missing: run `reactor migrate`"
                    " or paste `reactor sql` into the SQL editor)"
                )
            logger.error(f"cannot claim jobs: {message}{hint}; retrying on the next sweep")
            self._api_complaint = message

    async def _hand_back(self, table: str, lease: dict[str, Any]) -> None:
        try:
            await self._store.release(table, [lease])
        except StoreError as exc:
            logger.warning(f"could not hand back job {lease['id']} in {table}; its hand-off lapses: {exc}")

    async def _stand_down(self) -> None:
        """Withdraw this worker's standby, so that no job is handed to it once it stops."""
        for table in sorted(self._offered):
            try:
                await self._store.stand_down(table, self._config.worker_id)
            except StoreError as exc:
                logger.warning(f"could not withdraw the standby in {table}; it lapses by itself: {exc}")
        self._offered.clear()

    def _unreadable(self, table: str, exc: rows.Unreadable) -> None:
        """A row that cannot be run fails for good with the reason; the rest of its batch runs."""
        if exc.lease is None:
            logger.bind(table=table).error(f"{exc}; the reaper will hand it back")
            return
        job = Job(exc.lease["id"], table, "", None, 0, 0, exc.lease["lease_token"])
        job.log_context = {"job_id": job.id, "table": table, "worker_id": self._config.worker_id}
        self._metrics.jobs[(table, "", "failed")] += 1
        item = {**exc.lease, "error": str(exc), "permanent": True}
        self._reporter.submit(Report("fail", table, item, job, {"outcome": "failed"}))

    def _start(self, job: Job, task_group: TaskGroup, confirmed: anyio.Event | None = None) -> None:
        table = job.table
        handler = self._registry.get(table, job.job_type)
        if handler is None:
            return  # cannot happen: the claim names only registered types
        job.max_attempts = executor.max_attempts(handler, job.max_attempts)
        job.log_context = {
            "job_id": job.id,
            "table": table,
            "job_type": job.job_type,
            "attempt": job.attempt,
            "worker_id": self._config.worker_id,
        }
        job._progress = self._progress_writer(job)
        running = Running(job, handler, confirmed=confirmed)
        self.running.add(running)
        if job.run_at is not None:
            pickup = (datetime.now(UTC) - job.run_at).total_seconds()
            self._metrics.pickup_seconds.observe((table,), max(pickup, 0.0))
        if self._idle_runners:
            self._idle_runners -= 1
        else:
            self._runners += 1
            task_group.start_soon(self._runner, name="job runner")
        self._jobs.put_nowait(running)

    def _progress_writer(self, job: Job) -> Any:
        async def write(percent: int, message: str | None) -> bool:
            if message is not None:
                message = self._redactor.storable(message)
            try:
                held = await self._store.progress(job.table, job.id, job.lease_token, percent, message)
            except StoreError as exc:
                job.logger.warning(f"could not write progress: {exc}")
                return True
            if not held:
                self.running.lease_lost(job.table, job.id)
            return held

        return write

    async def _execute(self, running: Running) -> None:
        job, handler = running.job, running.handler
        outcome: Outcome | None = None
        if handler.timeout:
            running.scope.deadline = anyio.current_time() + handler.timeout
        with running.scope:
            outcome = await executor.call(job, handler, self._policy)
        if outcome is None and running.scope.cancelled_caught and not (running.lost or running.released):
            outcome = executor.timed_out(job, handler, self._policy)
        if running.confirmed is not None:
            await running.confirmed.wait()  # an unconfirmed hand-off's outcome would be refused
        try:
            self._finish(running, outcome)
        finally:
            self.running.remove(running)
            if self._offered.get(job.table) == 0 and self.standing_by(job.table):
                self._due.add(job.table)  # a slot is free and no hand-off can reach it: offer it
            if self._due or not self._claiming:
                self._wake.set()
            if not self._claiming and not self.running:
                self._drained.set()

    def _finish(self, running: Running, outcome: Outcome | None) -> None:
        job = running.job
        duration = time.monotonic() - running.started
        if running.lost:
            self._metrics.jobs[(job.table, job.job_type, "lost")] += 1
            return
        if running.released or outcome is None:
            self._metrics.jobs[(job.table, job.job_type, "released")] += 1
            self.to_release.setdefault(job.table, []).append({"id": job.id, "lease_token": job.lease_token})
            job.logger.bind(outcome="released").info("job cancelled by shutdown; handing it back")
            return
        self._metrics.jobs[(job.table, job.job_type, outcome.kind)] += 1
        self._metrics.handler_seconds.observe((job.table, job.job_type), duration)
        fields = {"outcome": outcome.kind, "duration_ms": round(duration * 1000, 1)}
        item = {"id": job.id, "lease_token": job.lease_token, **outcome.item()}
        kind = "complete" if outcome.kind == "completed" else "fail"
        self._reporter.submit(Report(kind, job.table, item, job, fields))
        if outcome.retry_at is not None:
            self._schedule(job.table, outcome.retry_at)
