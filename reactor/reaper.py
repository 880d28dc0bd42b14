"""Hands jobs whose lease expired back to pending (or to failed when their attempts are spent).

Every worker runs one; the SQL skips rows another reaper holds, so running it everywhere at once
is safe, and a fleet keeps reaping as long as one worker lives. The interval is jittered so that
workers started together do not reap in lockstep.
"""

from __future__ import annotations

import random

import anyio
from loguru import logger

from reactor.store import Store, StoreError


class Reaper:
    def __init__(self, store: Store, tables: list[str], interval: float, on_requeued) -> None:
        self._store = store
        self._tables = tables
        self._interval = interval
        self._on_requeued = on_requeued  # callable(table): requeued jobs may be claimable

    async def run(self) -> None:
        while True:
            await anyio.sleep(self._interval * random.uniform(0.5, 1.0))
            await self.reap()

    async def reap(self) -> None:
        for table in self._tables:
            try:
                answer = await self._store.reap(table)
            except StoreError as exc:
                logger.warning(f"reaping {table} failed: {exc}")
                continue
            requeued, failed = answer.get("requeued", []), answer.get("failed", [])
            if requeued or failed:
                logger.bind(table=table).warning(
                    f"reaped expired leases in {table}: requeued {requeued}, failed for good {failed}"
                )
            if requeued:
                self._on_requeued(table)
