"""Which tables are worth a claim, and which are due a tick.

Realtime events, timers and freed slots mark tables here; the claim loop takes them all at once
when it next looks, so a burst of a thousand inserts costs a handful of claims. It is built before
the parts that mark it (listener, poller) and the one that reads it (dispatcher).
"""

from __future__ import annotations

import anyio


class Wakeups:
    def __init__(self, tables: list[str]) -> None:
        self._tables = tables
        self._claims: set[str] = set()
        self._ticks: set[str] = set()
        self._event = anyio.Event()

    def wake(self, table: str | None = None) -> None:
        """Claim from `table` (every table when None) at the next look."""
        self._claims.update([table] if table else self._tables)
        self._event.set()

    def tick(self) -> None:
        """Tick every table at the next look (a tick also does the worker's periodic chores)."""
        self._ticks.update(self._tables)
        self._event.set()

    def later(self, table: str) -> None:
        """Claim from `table` at a look something else causes (a slot frees, a wake-up comes)."""
        self._claims.add(table)

    def pending(self) -> bool:
        return bool(self._claims)

    def nudge(self) -> None:
        """Look now, with whatever is marked (maybe nothing: the loop checks whether to stop)."""
        self._event.set()

    async def take(self) -> tuple[set[str], set[str]]:
        """Wait for a look; the tables to claim from and the tables to tick, unmarked."""
        await self._event.wait()
        self._event = anyio.Event()
        claims, self._claims = self._claims, set()
        ticks, self._ticks = self._ticks, set()
        return claims, ticks
