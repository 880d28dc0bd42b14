"""The slots this worker offers for hand-offs, as far as it knows.

While a table's Realtime feed is live, every claim offers the slots it leaves free (at most
MAX_STANDBY_SLOTS, for `seconds`), and an insert that finds the offer is written `processing`,
leased to this worker (sql/schema.sql, "claim and hand-off"). The worker keeps count: what the last
claim offered, by the SQL's own formula, less the hand-offs seen since. Once hand-offs have taken
half of it, while more slots are free than it still offers, a claim renews the offer before inserts
find it spent; so does one when it is spent and a slot frees. A renewal while hand-offs are still
on their way would offer their slots twice, so each claim tells the database how many hand-offs
this worker has heard of in the table, and the database leaves out the ones it made since
(reactor.stand_by). At shutdown the standby is withdrawn.
"""

from __future__ import annotations

from loguru import logger

from reactor.feed import Feed
from reactor.store import MAX_STANDBY_SLOTS, JobStore, StoreError


class Standby:
    def __init__(self, store: JobStore, worker_id: str, seconds: int, feed: Feed) -> None:
        self._store = store
        self._worker_id = worker_id
        self._seconds = seconds  # 0: this worker takes no hand-offs
        self._feed = feed
        self._offered: dict[str, int] = {}  # table -> slots still offered; absent: no standby
        self._made: set[str] = set()  # tables where a claim made the standby row (a tick cannot)
        self._full: dict[str, int] = {}  # table -> what the last claim (not a tick) offered
        self._heard: dict[str, int] = {}  # table -> hand-offs heard of since this worker started

    def seconds(self, table: str) -> int:
        """How long the next claim in `table` offers its free slots for (0: not at all)."""
        return self._seconds if self._seconds and self._feed.live(table) else 0

    def heard(self, table: str) -> int:
        """The hand-offs heard of in `table`: what a claim tells the database (reactor.stand_by)."""
        return self._heard.get(table, 0)

    def claimed(self, table: str, limit: int, claimed: int, seconds: int, tick: bool, heard: int) -> bool:
        """A claim asked for `limit` jobs, got `claimed`, and offered the rest for `seconds`, when
        this worker had heard of `heard` hand-offs; those heard since came out of that offer. True
        when one more claim must look: this claim stood the worker by where it was not, so an
        insert that committed while it ran found no standby to name and no event told of it; or it
        was a tick, which only renews a standby, where no claim has made one yet (a tick and a
        claim asked for at the same look are one tick, as when Realtime goes live)."""
        if not seconds:
            self._offered.pop(table, None)  # a claim without a standby withdraws it
            self._made.discard(table)
            return False
        new = table not in self._made
        if not tick:
            self._made.add(table)
        offer = min(limit - claimed, MAX_STANDBY_SLOTS)
        if tick:  # a tick's claim never raises the standby
            offer = min(offer, self._offered.get(table, 0))
        else:
            self._full[table] = offer
            offer = max(offer - (self.heard(table) - heard), 0)
        self._offered[table] = offer
        return new

    def took(self, table: str) -> None:
        """A hand-off took one of the slots offered in `table`."""
        self._heard[table] = self.heard(table) + 1
        if table in self._offered:
            self._offered[table] = max(self._offered[table] - 1, 0)

    def low(self, table: str, free: int) -> bool:
        """Whether a claim should renew the offer in `table` now: hand-offs have taken half of what
        the last claim offered or more, and with `free` slots a claim would offer more."""
        offered = self._offered.get(table)
        if offered is None or table not in self._made or not self.seconds(table):
            return False
        return offered * 2 <= self._full.get(table, 0) and free > offered

    def spent(self, table: str) -> bool:
        """Whether the offer in `table` is used up while hand-offs could still come: a freed slot
        is then reachable by a claim only."""
        return self._offered.get(table) == 0 and self.seconds(table) > 0

    async def withdraw(self) -> None:
        """Withdraw every standby, so that no job is handed to this worker once it stops."""
        for table in sorted(self._offered):
            try:
                await self._store.stand_down(table, self._worker_id)
            except StoreError as exc:
                logger.warning(f"could not withdraw the standby in {table}; it lapses by itself: {exc}")
        self._offered.clear()
        self._made.clear()
