"""What the worker knows about its Realtime feed, in one place the other parts read.

The listener writes it: the connection's state, the tables whose changes it delivers now, and
whether it wants a probe sent. The poller reads the health (a healthy feed means slow ticks), the
dispatcher whether a table's feed is live (only then may it stand by for hand-offs), and the ticker
whether to carry the probe. It is built before any of them, so none needs another to exist first.
"""

from __future__ import annotations

import anyio


class Feed:
    def __init__(self, enabled: bool) -> None:
        self.state = "connecting" if enabled else "off"  # connecting, subscribed, down, off
        self._live_tables: set[str] = set()
        self._probe_table: str | None = None  # the table whose next tick carries the probe
        self._probe_sent = anyio.Event()

    def healthy(self) -> bool:
        return self.state == "subscribed"

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
