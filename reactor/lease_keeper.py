"""Keeps the leases of running jobs alive, and of finished jobs whose outcome is still waiting to
be recorded: one batched heartbeat per table every lease/3.

Three beats fit in a lease, so one slow or failed call costs nothing. A job the database no
longer gives us (stale) was reaped and may run elsewhere: it is cancelled here and never reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from loguru import logger

from reactor.dispatcher import Dispatcher
from reactor.store import MAX_BATCH, Store, StoreError


class LeaseKeeper:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        unreported: Callable[[], dict[str, list[dict[str, Any]]]],
        lease_seconds: int,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._unreported = unreported
        self._lease_seconds = lease_seconds

    async def run(self) -> None:
        while True:
            await anyio.sleep(self._lease_seconds / 3)
            await self.beat()

    async def beat(self) -> None:
        held = self._dispatcher.leases()
        for table, leases in self._unreported().items():
            held.setdefault(table, []).extend(leases)
        for table, leases in held.items():
            for start in range(0, len(leases), MAX_BATCH):
                batch = leases[start : start + MAX_BATCH]
                try:
                    answer = await self._store.heartbeat(table, batch, self._lease_seconds)
                except StoreError as exc:
                    logger.warning(f"heartbeat for {len(batch)} jobs in {table} failed: {exc}")
                    continue
                for job_id in answer.get("stale", []):
                    self._dispatcher.lease_lost(table, job_id)
