"""The claim loop: when to claim, how many, and the hand-offs the listener brings.

Wake-ups (Realtime events, timers, freed slots) mark tables in `Wakeups`; the loop claims once
per look, so a burst of a thousand inserts costs a handful of claims. A claim never asks for more
jobs than there are free slots, and one claim runs at a time, so the worker never holds a job it
cannot start at once. Ticks (ticker.py) are the same claim with the worker's chores done in the
same request. What happens to a claimed job is the runner's (runner.py).

Hand-offs (sql/schema.sql, "claim and hand-off") need no claim: while Realtime is live every claim
offers the slots it leaves free (standby.py), an insert takes one, and the listener brings its row
here (`take`). A hand-off that finds no free slot (a claim for the same slots was in flight) is
handed straight back, so concurrency stays a hard limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup
from loguru import logger

from reactor import rows
from reactor.handlers import Registry
from reactor.job import Job
from reactor.runner import JobRunner
from reactor.running import RunningJobs
from reactor.standby import Standby
from reactor.store import MAX_BATCH, JobStore, Rejected, StoreError
from reactor.ticker import Ticker
from reactor.wakeups import Wakeups


class Dispatcher:
    def __init__(
        self,
        worker_id: str,
        concurrency: int,
        lease_seconds: int,
        store: JobStore,
        registry: Registry,
        ticker: Ticker,
        wakeups: Wakeups,
        standby: Standby,
        runner: JobRunner,
        running: RunningJobs,
        confirm: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._worker_id = worker_id
        self._concurrency = concurrency
        self._lease_seconds = lease_seconds
        self._store = store
        self._registry = registry
        self._ticker = ticker
        self._wakeups = wakeups
        self._standby = standby
        self._runner = runner
        self._running = running
        self._confirm = confirm  # sends a hand-off's confirmation (the lease keeper)
        self._claiming = True
        self._group: TaskGroup | None = None
        self.api_ok = False  # the last claim reached the API (readiness)
        self._declared: set[str] = set()  # tables whose declared limits the database has
        self._api_complaint = ""

    @property
    def claiming(self) -> bool:
        return self._claiming

    def free(self) -> int:
        return self._concurrency - len(self._running)

    def stop_claiming(self) -> None:
        self._claiming = False
        self._wakeups.nudge()

    def take(self, table: str, record: dict[str, Any]) -> None:
        """Start a job the database handed to this worker on insert; its Realtime record is the
        claim. The hand-off is confirmed at once, and its outcome reported only after that."""
        try:
            job = rows.read(table, record, attempt_column="attempts")
        except rows.Unreadable as exc:
            if exc.lease is not None and (table, exc.lease["id"]) not in self._running:
                self._standby.took(table)
            self._runner.unreadable(table, exc)
            return
        if (table, job.id) in self._running:
            return
        self._standby.took(table)
        lease = {"id": job.id, "lease_token": job.lease_token}
        handler = self._registry.get(table, job.job_type)
        if not self._claiming or self._group is None or handler is None:
            self._running.release_later(table, lease)
            return
        # No free slot (a claim for the same slots was in flight), or a record Realtime cut for its
        # size, which keeps only short values and so no payload (docs/hosted-supabase.md): hand
        # it back, and claim it whole once there is room.
        if self.free() <= 0 or "payload" not in record:
            self._group.start_soon(self._hand_back, table, lease)
            return
        self._runner.start(job, handler, self._group, confirmed=anyio.Event())
        self._confirm(table, lease)
        if self._standby.low(table, self.free()):
            self._wakeups.wake(table)  # renew the offer before inserts find it spent

    async def run(self, group: TaskGroup) -> None:
        """Claim until `stop_claiming`, starting jobs in `group`; then withdraw the standby."""
        self._group = group
        try:
            while self._claiming:
                claims, ticks = await self._wakeups.take()
                for table in sorted(claims | ticks):
                    if not self._claiming:
                        break
                    if table not in ticks and self.free() <= 0:
                        self._wakeups.later(table)  # claimed again when a slot frees
                        continue
                    await self._claim(table, group, tick=table in ticks)
            await self._standby.withdraw()
        finally:
            self._runner.close()

    async def _declare_limits(self, table: str) -> bool:
        """Before the first claim from `table`, the limits its handlers declare are in the database
        (they apply where none are set); False while that cannot be done."""
        if table in self._declared:
            return True
        declared = self._registry.limits(table)
        if declared:
            try:
                held = await self._store.declare_limits(table, declared)
            except StoreError as exc:
                self._complain(exc)
                return False
            for job_type, limits in declared.items():
                stored = {k: v for k, v in held.get(job_type, {}).items() if k != "paused"}
                if stored != limits:
                    logger.warning(
                        f"limits for {job_type} in {table}: the database holds {held.get(job_type, {})},"
                        f" not the declared {limits}; the database's apply (reactor limit)"
                    )
        self._declared.add(table)
        return True

    async def _claim(self, table: str, group: TaskGroup, tick: bool) -> None:
        if not await self._declare_limits(table):
            return
        limit = min(max(self.free(), 0), MAX_BATCH)  # a full answer must read as one
        job_types = self._registry.job_types(table)
        standby = self._standby.seconds(table)
        heard = self._standby.heard(table)
        try:
            if tick:
                claimed = await self._ticker.tick(table, job_types, limit, standby)
            else:
                claimed = await self._store.claim(
                    table, self._worker_id, job_types, limit, self._lease_seconds, standby, heard
                )
        except StoreError as exc:
            self._complain(exc)
            return
        if self._standby.claimed(table, limit, len(claimed), standby, tick, heard):
            self._wakeups.wake(table)
        if not self.api_ok:
            logger.info(f"claiming from table {table}")
        self.api_ok, self._api_complaint = True, ""
        for row in claimed:
            try:
                job = rows.read(table, row)
            except rows.Unreadable as exc:
                self._runner.unreadable(table, exc)
                continue
            self._start(job, group)
        if limit and len(claimed) == limit:
            self._wakeups.later(table)  # a full batch: more are probably waiting

    def _start(self, job: Job, group: TaskGroup) -> None:
        handler = self._registry.get(job.table, job.job_type)
        if handler is not None:  # always: the claim names only registered types
            self._runner.start(job, handler, group)

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
                    " or paste `reactor sql` into the SQL editor; if they ran, the API's schema"
                    " cache is stale: run `notify pgrst, 'reload schema';` in the SQL editor)"
                )
            elif isinstance(exc, Rejected) and exc.status == 404:
                # A project's API names a missing function (above); a bare 404 is another server.
                hint = " (check SUPABASE_URL: the server there is not a Supabase project's API)"
            logger.error(f"cannot claim jobs: {message}{hint}; retrying on the next tick")
            self._api_complaint = message

    async def _hand_back(self, table: str, lease: dict[str, Any]) -> None:
        try:
            await self._store.release(table, [lease])
        except StoreError as exc:
            logger.warning(f"could not hand back job {lease['id']} in {table}; its hand-off lapses: {exc}")
        self._wakeups.wake(table)  # claimed now, or, with no slot free, when one frees
