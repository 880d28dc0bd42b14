"""Keeps the leases of running jobs alive, and of finished jobs whose outcome is still waiting to
be recorded: one batched heartbeat per table every lease/3. It also confirms hand-offs.

Three beats fit in a lease, so one slow or failed call costs nothing. A job the database no
longer gives us (stale) was reaped and may run elsewhere, or was cancelled on request (the answer
says which): it is cancelled here and never reported.

A hand-off (a job the database gave this worker on insert, sql/migrations/0007) holds a short
lease until it is confirmed by a heartbeat, so each is confirmed at once: hand-offs that arrive
together share one request, a failed request is tried again every half second, and after the
hand-off lease (5 s) it is left to the database, which will have requeued it or not. Either way
the running job hears that its confirmation is settled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
from loguru import logger

from reactor.running import RunningJobs
from reactor.store import MAX_BATCH, JobStore, StoreError

HAND_OFF_SECONDS = 5.0  # the hand-off lease in reactor.hand_off() (tests/contract/test_constants.py)
_CONFIRM_RETRY = 0.5


class LeaseKeeper:
    def __init__(
        self,
        store: JobStore,
        running: RunningJobs,
        unreported: Callable[[], dict[str, list[dict[str, Any]]]],
        lease_seconds: int,
    ) -> None:
        self._store = store
        self._running = running
        self._unreported = unreported
        self._lease_seconds = lease_seconds
        self._to_confirm: dict[str, list[tuple[float, dict[str, Any]]]] = {}  # table -> (deadline, lease)
        self._confirm_due = anyio.Event()

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._confirm_hand_offs)
            while True:
                await anyio.sleep(self._lease_seconds / 3)
                await self.beat()

    async def beat(self) -> None:
        for table, leases in self._held().items():
            for start in range(0, len(leases), MAX_BATCH):
                batch = leases[start : start + MAX_BATCH]
                try:
                    answer = await self._store.heartbeat(table, batch, self._lease_seconds)
                except StoreError as exc:
                    logger.warning(f"heartbeat for {len(batch)} jobs in {table} failed: {exc}")
                    continue
                self._lost(table, batch, answer)

    def _lost(self, table: str, leases: list[dict[str, Any]], answer: dict[str, Any]) -> None:
        """Stop the jobs whose leases a heartbeat found stale. Each is named with the lease sent,
        so a stale answer about an earlier attempt leaves a later one of this worker's alone."""
        sent = {lease["id"]: lease["lease_token"] for lease in leases}
        cancelled = set(answer.get("cancelled", []))
        for job_id in answer.get("stale", []):
            self._running.lease_lost(table, job_id, job_id in cancelled, sent.get(job_id))

    def _held(self) -> dict[str, list[dict[str, Any]]]:
        """Each table's leases to extend, one per job: the database refuses a batch naming a job
        twice. A job can be listed twice when its outcome waits to be recorded while it was reaped
        and claimed again by this worker; the later lease is the one that can hold, and the one a
        running job has is later than any waiting outcome's."""
        held: dict[str, dict[int, dict[str, Any]]] = {}
        for table, leases in self._unreported().items():
            held.setdefault(table, {}).update((lease["id"], lease) for lease in leases)
        for table, leases in self._running.leases().items():
            held.setdefault(table, {}).update((lease["id"], lease) for lease in leases)
        return {table: list(by_id.values()) for table, by_id in held.items()}

    def confirm(self, table: str, lease: dict[str, Any]) -> None:
        self._to_confirm.setdefault(table, []).append((time.monotonic() + HAND_OFF_SECONDS, lease))
        self._confirm_due.set()

    async def _confirm_hand_offs(self) -> None:
        while True:
            await self._confirm_due.wait()
            self._confirm_due = anyio.Event()
            pending, self._to_confirm = self._to_confirm, {}
            retry = False
            for table, items in pending.items():
                for start in range(0, len(items), MAX_BATCH):
                    retry |= await self._confirm(table, items[start : start + MAX_BATCH])
            if retry:
                await anyio.sleep(_CONFIRM_RETRY)
                self._confirm_due.set()

    async def _confirm(self, table: str, items: list[tuple[float, dict[str, Any]]]) -> bool:
        """Confirm one batch; True when some of it waits for another try."""
        try:
            answer = await self._store.heartbeat(table, [lease for _, lease in items], self._lease_seconds)
        except StoreError as exc:
            now, keep = time.monotonic(), []
            for deadline, lease in items:
                if deadline > now:
                    keep.append((deadline, lease))
                else:  # past the hand-off lease: the database has decided; report and see
                    self._running.confirmed(table, lease["id"])
            logger.warning(f"confirming {len(items)} hand-offs in {table} failed: {exc}")
            self._to_confirm.setdefault(table, []).extend(keep)
            return bool(keep)
        self._lost(table, [lease for _, lease in items], answer)
        for job_id in answer.get("extended", []):
            self._running.confirmed(table, job_id)
        return False
