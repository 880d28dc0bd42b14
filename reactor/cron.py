"""Cron expressions read in a time zone: when a schedule's times fall, as instants.

Reading and evaluating cron is cronsim's job, not reactor's: a maintained library, one module with
no dependencies, that reads five fields, or six with seconds first, and follows Debian cron across
daylight-saving changes. A fixed time that falls in the hour skipped in spring runs when the clock
jumps past it, and a fixed time the autumn change repeats runs once; an expression with a wildcard
minute or hour runs in every real hour, so an hourly job runs 23 times that spring day and 25 times
that autumn day. (croniter, the other common library, runs a repeated fixed time twice.) Time
zones are IANA names read with zoneinfo, so their rules are the operating system's or the tzdata
package's.

Times are computed on the zone's wall clock and returned as UTC instants, sorted and without
duplicates: a wall time in the spring gap names the same instant as one just after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# A daylight-saving change moves a zone's wall clock by at most two hours, so a wall time is at most
# this far from the instant the iteration has reached: read this far past the end, and none is lost.
_DST_SLACK = timedelta(hours=3)


class CronError(ValueError):
    """A cron expression or a time zone that cannot be read; the message says which and why."""


@dataclass(frozen=True)
class Cron:
    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC") -> Cron:
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise CronError(f"cron {expression!r} is not five fields (or six, seconds first)")
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown time zone {time_zone!r}: an IANA name, e.g. Europe/Berlin") from None
        try:
            CronSim(" ".join(fields), datetime.now(zone))
        except CronSimError as exc:
            raise CronError(f"cron {expression!r}: {exc}") from None
        return cls(" ".join(fields), zone)

    def times(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The first `limit` times later than `after` and no later than `until`, in UTC."""
        found: set[datetime] = set()
        for at in CronSim(self.expression, after.astimezone(self.zone)):
            instant = at.astimezone(UTC)
            if instant > until + _DST_SLACK or len(found) >= limit + 8:
                break
            if after < instant <= until:
                found.add(instant)
        return sorted(found)[:limit]

    def next_after(self, after: datetime) -> datetime:
        """The first time later than `after`, in UTC."""
        first: datetime | None = None
        for seen, at in enumerate(CronSim(self.expression, after.astimezone(self.zone))):
            instant = at.astimezone(UTC)
            if first is not None and (instant > first + _DST_SLACK or seen > 16):
                break
            if instant > after and (first is None or instant < first):
                first = instant
        if first is None:
            raise CronError(f"cron {self.expression!r} has no time after {after.isoformat()}")
        return first
