"""What the worker knows about its Realtime feed, in one place the other parts read.

The listener writes it: the connection's state, the tables whose changes it delivers now, and
whether it wants a probe sent. The ticker writes what the database reports of reactor's Realtime
budget (sql/migrations/0010): while inserts are withheld from Realtime for it, jobs arrive
unannounced. The poller reads whether the feed can be depended on (then ticks are slow), the
dispatcher whether a table's feed is live (only then may it stand by for hand-offs), and the ticker
whether to carry the probe. It is built before any of them, so none needs another to exist first.
"""

from __future__ import annotations

import time

import anyio

# After a tick finds inserts withheld for the budget, ticks stay fast this long: the hosted quota
# is a one-minute average, so a busy minute is the unit to expect.
BUDGET_HOLD_SECONDS = 60.0


class Feed:
    def __init__(self, enabled: bool) -> None:
        self.state = "connecting" if enabled else "off"  # connecting, subscribed, down, off
        self._live_tables: set[str] = set()
        self._probe_table: str | None = None  # the table whose next tick carries the probe
        self._probe_sent = anyio.Event()
        self._withheld: int | None = None  # the database's count of inserts withheld, as last seen
        self._budget_reached_at = float("-inf")

    def healthy(self) -> bool:
        return self.state == "subscribed"

    def dependable(self) -> bool:
        """Whether the jobs meant for this worker reach it over Realtime: the feed is healthy and no
        tick has found inserts withheld for the budget within the last BUDGET_HOLD_SECONDS."""
        return self.healthy() and not self.budget_reached()

    def budget_reached(self) -> bool:
        return time.monotonic() - self._budget_reached_at < BUDGET_HOLD_SECONDS

    def withheld(self, total: int) -> int:
        """A tick's report of the inserts withheld in all; how many are new since the last report."""
        new = 0 if self._withheld is None else max(0, total - self._withheld)
        self._withheld = total
        if new:
            self._budget_reached_at = time.monotonic()
        return new

    def live(self, table: str) -> bool:
        """Whether `table`'s changes reach this worker now: only then can a hand-off's event reach
        it, so only then may it stand by."""
        return self.healthy() and table in self._live_tables

    def went_live(self, table: str) -> None:
        self._live_tables.add(table)

    def connection_lost(self) -> None:
        self._live_tables = set()

    def want_probe(self, table: str) -> anyio.Event:
        """Ask the next tick of `table` to carry a probe; the event is set once one has."""
        self._probe_table, self._probe_sent = table, anyio.Event()
        return self._probe_sent

    def forget_probe(self) -> None:
        self._probe_table = None

    def probe_wanted(self, table: str) -> bool:
        return self._probe_table == table

    def probe_sent(self) -> None:
        self._probe_table = None
        self._probe_sent.set()
