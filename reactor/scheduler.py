"""The scheduler: enqueues the jobs of the schedules of this worker's job types at their times.

Its first request declares the app's schedules (`@app.cron`) and learns every schedule of the job
types this worker handles, however declared (in code, or in SQL with reactor.schedule()), and how
far each has been fired. It then sleeps until the next time any of them falls due by the
database's clock, computes the due times (cron.py: the expression read in the schedule's time
zone) and sends them in one request, reactor_fire_schedules. The database enqueues each time once,
however many workers send it, and only within the schedule's catch-up window (sql/schema.sql,
section 9b); its answer brings the schedules afresh. So a worker costs no request while no
schedule is due, besides one a minute to hear of schedules declared elsewhere, and one per due
time; every worker sends each due time, and all but the first find it enqueued already.
Schedules left to pg_cron are pg_cron's; the scheduler leaves them alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from loguru import logger

from reactor.cron import Cron, CronError
from reactor.schedules import Schedule
from reactor.store import MAX_BATCH, JobStore, Rejected, StoreError

# A schedule declared in SQL, or changed there, reaches an idle worker within this long.
REFRESH_SECONDS = 60.0
_RETRY_SECONDS = 5.0  # after a request that failed
# Fire this long after a time, as the poller's timers do; and never call again sooner than the
# shortest wait, so times the database does not yet take are not asked about in a busy loop.
_MARGIN = 0.005
_SHORTEST_WAIT = 0.05


@dataclass(frozen=True)
class _Known:
    listed: dict[str, Any]  # as reactor_fire_schedules lists it
    cron: Cron | None  # None: not ours to fire (pg_cron's), or unreadable
    fired_through: datetime

    @property
    def catch_up(self) -> timedelta:
        return timedelta(seconds=self.listed["catch_up_seconds"])


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        tables: dict[str, list[str]],
        declared: Sequence[Schedule],
        events: Counter[str],
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._tables = tables  # table -> the job types this worker handles there
        self._declare = [schedule.declaration() for schedule in declared]
        self._events = events  # Metrics.events: jobs enqueued for schedules are counted there
        self._refresh = refresh_seconds
        self._known: dict[str, _Known] = {}
        self._offset = timedelta(0)  # the database's clock less ours, as the last answer showed it
        self._unreadable: set[tuple[str, str, str]] = set()  # logged once each
        self._complaint = ""

    async def run(self) -> None:
        while True:
            fire, more = self._due()
            try:
                answer = await self._store.fire_schedules(self._worker_id, self._tables, self._declare, fire)
            except Rejected as exc:
                if exc.status == 404:  # a contract without schedules (sql/migrations/0011)
                    self._without_schedules(exc)
                    return
                if self._declare:
                    names = ", ".join(item["name"] for item in self._declare)
                    logger.error(f"schedules {names} refused by the database, so not declared: {exc}")
                    self._declare = []
                    continue
                self._complain(exc)
                await anyio.sleep(_RETRY_SECONDS)
                continue
            except StoreError as exc:
                self._complain(exc)
                await anyio.sleep(_RETRY_SECONDS)
                continue
            received = datetime.now(UTC)
            if self._declare:
                logger.info(f"declared schedules {', '.join(item['name'] for item in self._declare)}")
            self._declare, self._complaint = [], ""
            self._learn(answer, received)
            await anyio.sleep(0 if more else self._wait())

    def _now(self) -> datetime:
        """The database's clock, or a little behind it: a time is sent only once it is due there."""
        return datetime.now(UTC) + self._offset

    def _due(self) -> tuple[list[dict[str, Any]], bool]:
        """The due times to send, at most a batch, oldest first per schedule; and whether more are due."""
        now, room, items = self._now(), MAX_BATCH, []
        for _, known in sorted(self._known.items()):
            if known.cron is None:
                continue
            times = known.cron.times(max(known.fired_through, now - known.catch_up), now, room + 1)
            if not times:
                continue
            if len(times) > room:
                items.append(self._item(known, times[:room]))
                return items, True
            items.append(self._item(known, times))
            room -= len(times)
        return items, False

    @staticmethod
    def _item(known: _Known, times: list[datetime]) -> dict[str, Any]:
        listed = known.listed
        return {
            "name": listed["name"],
            "cron": listed["cron"],
            "time_zone": listed["time_zone"],
            "times": [at.isoformat() for at in times],
        }

    def _learn(self, answer: dict[str, Any], received: datetime) -> None:
        # The answer's clock is its transaction's start, before the request came back: an offset
        # that puts the database's clock a little behind, never ahead.
        self._offset = datetime.fromisoformat(answer["now"]) - received
        known = {
            s["name"]: _Known(s, self._cron(s), datetime.fromisoformat(s["fired_through"]))
            for s in answer["schedules"]
        }
        for fired in answer["fired"]:
            self._report(fired, known.get(fired["name"]))
        self._known = known

    def _cron(self, listed: dict[str, Any]) -> Cron | None:
        if listed["engine"] != "worker":
            return None
        try:
            return Cron.parse(listed["cron"], listed["time_zone"])
        except CronError as exc:
            key = (listed["name"], listed["cron"], listed["time_zone"])
            if key not in self._unreadable:
                self._unreadable.add(key)
                logger.error(f"schedule {listed['name']} is not fired by this worker: {exc}")
            return None

    def _report(self, fired: dict[str, Any], known: _Known | None) -> None:
        name, enqueued = fired["name"], fired["enqueued"]
        if enqueued:
            self._events["scheduled_jobs"] += len(enqueued)
            ids = ", ".join(str(e["id"]) for e in enqueued)
            logger.bind(schedule=name).info(
                f"schedule {name}: enqueued job(s) {ids} for {enqueued[0]['at']}"
                + (f" to {enqueued[-1]['at']}" if len(enqueued) > 1 else "")
            )
        skipped = fired["skipped"]
        if skipped and known is not None and known.cron is not None:
            start, end = datetime.fromisoformat(skipped["from"]), datetime.fromisoformat(skipped["to"])
            lost = known.cron.times(start, end, MAX_BATCH + 1)
            if lost:
                count = f"more than {MAX_BATCH}" if len(lost) > MAX_BATCH else str(len(lost))
                logger.bind(schedule=name).warning(
                    f"schedule {name}: skipped {count} time(s) from {lost[0].isoformat()}, missed longer "
                    f"ago than its catch-up window of {known.listed['catch_up_seconds']} s"
                )

    def _wait(self) -> float:
        """Seconds until the next time any schedule falls due, or until the next look for news."""
        now, soonest = self._now(), self._refresh
        for known in self._known.values():
            if known.cron is not None:
                upcoming = known.cron.next_after(max(known.fired_through, now - known.catch_up))
                soonest = min(soonest, (upcoming - now).total_seconds() + _MARGIN)
        return max(soonest, _SHORTEST_WAIT)

    def _without_schedules(self, exc: Rejected) -> None:
        if self._declare:
            logger.error(
                f"schedules cannot run: the database has no reactor_fire_schedules ({exc}); "
                "apply sql/migrations/0011_schedules.sql with `reactor migrate`"
            )
        else:
            logger.debug(f"no schedules: the database's contract predates them ({exc})")

    def _complain(self, exc: StoreError) -> None:
        message = str(exc)
        if message != self._complaint:
            logger.warning(f"cannot fire schedules: {message}; trying again in {_RETRY_SECONDS:.0f} s")
            self._complaint = message
