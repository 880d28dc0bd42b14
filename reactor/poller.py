"""Sweeps that find work Realtime did not announce, and timers for work that falls due later.

A sweep is one wake-up of the dispatcher for every table. While Realtime is healthy it is a slow
safety net (events are at most once); while it is not, it is the pickup path and runs fast. A job
known to fall due at a given time (a retry, or a scheduled insert seen over Realtime) gets a timer,
so it starts on time rather than on the next sweep.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio


class Poller:
    def __init__(
        self, wake: Callable[[str | None], None], fast: float, slow: float, healthy: Callable[[], bool]
    ) -> None:
        self._wake = wake
        self._fast = fast
        self._slow = slow
        self._healthy = healthy
        self._timers: list[tuple[float, str]] = []  # (monotonic due time, table)
        self._changed = anyio.Event()
        self.sweeps = 0

    def interval(self) -> float:
        return self._slow if self._healthy() else self._fast

    def health_changed(self) -> None:
        """Realtime went up or down: start the next sweep on the new schedule at once."""
        self._changed.set()

    def schedule(self, table: str, at: datetime) -> None:
        delay = (at - datetime.now(UTC)).total_seconds()
        heapq.heappush(self._timers, (time.monotonic() + max(delay, 0.0), table))
        self._changed.set()

    async def run(self) -> None:
        next_sweep = time.monotonic()
        while True:
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                self._wake(heapq.heappop(self._timers)[1])
            if now >= next_sweep:
                self.sweeps += 1
                self._wake(None)
                next_sweep = now + self.interval()
            wait = next_sweep - now
            if self._timers:
                wait = min(wait, self._timers[0][0] - now)
            self._changed = anyio.Event()
            with anyio.move_on_after(max(wait, 0.0)):
                await self._changed.wait()
            if not self._healthy():
                next_sweep = min(next_sweep, time.monotonic() + self._fast)
