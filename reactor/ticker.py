"""The tick: one `reactor_tick` request per table that does all of a worker's periodic chores.

Each tick reaps expired leases (every worker is a reaper; the SQL skips rows another reaper
holds, so that is safe), sweeps for claimable jobs Realtime did not announce, and learns when the
next scheduled job falls due, so a timer starts it on time. When they are due it also fetches the
queue statistics for the log and sends the Realtime probe, and it reports the inserts the database
withheld from Realtime for reactor's budget (sql/migrations/0010). Doing all of that in one request keeps
an idle worker at two or three requests a minute (sql/migrations/0004_tick.sql).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import anyio
from loguru import logger

from reactor.store import JobStore, StoreError

# Statistics ride along with the first tick after three quarters of their interval, so ticks
# that come a little early for other reasons don't each need one of their own.
_STATS_SLACK = 0.75
_REMOVE_PROBES_SECONDS = 3.0


class RealtimeFeed(Protocol):
    def probe_wanted(self, table: str) -> bool: ...

    def probe_sent(self) -> None: ...

    def budget_reached(self) -> bool: ...

    def withheld(self, total: int) -> int: ...


class Ticker:
    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        lease_seconds: int,
        stats_seconds: float,
        due_in: Callable[[str, float], None],
        feed: RealtimeFeed | None,
        events: Counter[str],
        limits: dict[str, dict[str, dict[str, Any]]] | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._stats_seconds = stats_seconds
        self._due_in = due_in  # callable(table, seconds): the next scheduled job falls due then
        self._feed = feed  # wants a probe sent now and then, learns of the budget; None: no Realtime
        self._events = events  # Metrics.events: inserts seen withheld are counted there
        self._limits = limits  # Metrics.limits: each table's limited job types, as statistics last said
        self._stats_at: dict[str, float] = {}
        self._probes: dict[str, int] = {}  # table -> our probe row, deleted by the next tick

    async def tick(
        self, table: str, job_types: Sequence[str], limit: int, standby_seconds: int = 0
    ) -> list[dict[str, Any]]:
        """Do the chores for `table` and claim up to `limit` jobs; the claimed rows. With
        `standby_seconds`, the slots left are offered for hand-offs (store.claim)."""
        now = time.monotonic()
        stats = now >= self._stats_at.get(table, float("-inf")) + self._stats_seconds * _STATS_SLACK
        probe = self._feed is not None and self._feed.probe_wanted(table)
        answer = await self._store.tick(
            table,
            self._worker_id,
            job_types,
            limit,
            self._lease_seconds,
            stats=stats,
            probe=probe,
            old_probe=self._probes.pop(table, None),
            standby_seconds=standby_seconds,
        )
        if answer["probe"] is not None and self._feed is not None:
            self._probes[table] = answer["probe"]
            self._feed.probe_sent()
        if answer["withheld"] is not None and self._feed is not None:
            self._note_withheld(answer["withheld"])
        _log_reaped(table, answer["reaped"])
        if answer["stats"] is not None:
            self._stats_at[table] = now
            _log_stats(table, answer["stats"])
            if self._limits is not None:
                self._limits[table] = answer["stats"].get("limits", {})
        if answer["next_due_seconds"] is not None:
            self._due_in(table, float(answer["next_due_seconds"]))
        return answer["claimed"]

    def _note_withheld(self, total: int) -> None:
        reached = self._feed.budget_reached()
        new = self._feed.withheld(total)
        self._events["realtime_withheld"] += new
        if new and not reached:
            logger.warning(
                f"Realtime budget reached: {new} insert(s) since the last tick were not announced "
                "(reactor.realtime_budget); ticking fast to claim them until the budget frees"
            )

    async def remove_probes(self) -> None:
        """Delete the probe rows still standing; at shutdown, so a stopped worker leaves none. A
        down API must not hold up the exit: a row left behind is a cancelled row, pruned in time."""
        with anyio.move_on_after(_REMOVE_PROBES_SECONDS):
            for table, probe_id in list(self._probes.items()):
                try:
                    await self._store.delete_probe(table, probe_id)
                except StoreError as exc:
                    logger.warning(f"Realtime probe row {probe_id} in {table} not removed: {exc}")
                del self._probes[table]


def _log_reaped(table: str, reaped: dict[str, list[int]]) -> None:
    requeued, failed = reaped.get("requeued", []), reaped.get("failed", [])
    if requeued or failed:
        logger.bind(table=table).warning(
            f"reaped expired leases in {table}: requeued {requeued}, failed for good {failed}"
        )


def _log_stats(table: str, stats: dict[str, Any]) -> None:
    logger.bind(table=table, **{k: v for k, v in stats.items() if k != "table"}).info("queue statistics")
