"""When to tick, and timers for work that falls due later.

A tick (ticker.py) sweeps every table for claimable jobs and does the worker's periodic chores.
While Realtime is healthy the tick is a slow safety net (events are at most once); while it is
not, it is the pickup path and runs fast. A job known to fall due at a given time (a retry, a
scheduled insert this worker heralds) gets a timer that wakes a claim, so it starts on time rather
than on the next tick. The next due time a tick reports (a scheduled job, or the end of a rate
limit's window with jobs waiting) gets a tick of its own, which claims and reports the next one.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import anyio

# A timer fires this much after the job's run_at, so the database's clock has reached it too.
_TIMER_MARGIN = 0.005


class Poller:
    def __init__(
        self,
        wake: Callable[[str | None], None],
        tick: Callable[[], None],
        fast: float,
        slow: float,
        healthy: Callable[[], bool],
        events: Counter[str],
    ) -> None:
        self._wake = wake
        self._tick = tick
        self._fast = fast
        self._slow = slow
        self._healthy = healthy
        self._timers: list[tuple[float, str]] = []  # (monotonic due time, table)
        self._next_due: dict[str, float] = {}  # table -> when the next scheduled job falls due
        self._tick_now = False
        self._changed = anyio.Event()
        self._events = events  # Metrics.events: ticks are counted there

    def interval(self) -> float:
        return self._slow if self._healthy() else self._fast

    def health_changed(self) -> None:
        """Realtime went up or down: start the next tick on the new schedule at once."""
        self._changed.set()

    def tick_now(self) -> None:
        """Tick at once, out of schedule (the listener wants its probe sent)."""
        self._tick_now = True
        self._changed.set()

    def schedule(self, table: str, at: datetime) -> None:
        delay = (at - datetime.now(UTC)).total_seconds()
        heapq.heappush(self._timers, (time.monotonic() + max(delay, 0.0) + _TIMER_MARGIN, table))
        self._changed.set()

    def due_in(self, table: str, seconds: float) -> None:
        """Something in `table` falls due in `seconds`, by the database's clock: a scheduled job,
        or a rate-limited type's next start. Each tick reports it afresh, so one timer a table is
        enough and they never pile up."""
        self._next_due[table] = time.monotonic() + max(seconds, 0.0) + _TIMER_MARGIN
        self._changed.set()

    async def run(self) -> None:
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                self._wake(heapq.heappop(self._timers)[1])
            for table, due in list(self._next_due.items()):
                if due <= now:  # a tick, not a claim: it also says when the next falls due
                    del self._next_due[table]
                    self._tick_now = True
            if now >= next_tick or self._tick_now:
                self._events["ticks"] += 1
                self._tick_now = False
                self._tick()
                next_tick = now + self.interval()
            soonest = min([next_tick, *self._next_due.values(), *(t[0] for t in self._timers[:1])])
            self._changed = anyio.Event()
            with anyio.move_on_after(max(soonest - now, 0.0)):
                await self._changed.wait()
            if not self._healthy():
                next_tick = min(next_tick, time.monotonic() + self._fast)
