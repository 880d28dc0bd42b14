"""Schedules: a job enqueued at every time of a cron expression, declared with `@app.cron`.

A declaration is checked here as the database checks it (sql/schema.sql, section 9b), so a bad
one stops the worker at start-up, naming the schedule, rather than in the database later. The
database keeps the schedules; workers fire them (scheduler.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reactor.config import TABLE_NAME
from reactor.cron import Cron, CronError

NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}\Z")  # reactor.schedule()'s rule
MAX_CATCH_UP_SECONDS = 31622400  # a year and a day
DEFAULT_CATCH_UP_SECONDS = 3600


@dataclass(frozen=True)
class Schedule:
    """Enqueue a job of `job_type` into `table` at every time of `cron` in `time_zone`. Times
    missed while no worker ran are enqueued once each when a worker is back within `catch_up`
    seconds of them; older ones are skipped."""

    name: str
    cron: str
    job_type: str
    table: str = "jobs"
    payload: Any = field(default_factory=dict)
    time_zone: str = "UTC"
    catch_up: int = DEFAULT_CATCH_UP_SECONDS
    priority: int = 0
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(
                f"schedule name {self.name!r}: 1 to 100 letters, digits and _ . : -, "
                "starting with a letter or digit"
            )
        try:
            Cron.parse(self.cron, self.time_zone)
        except CronError as exc:
            raise ValueError(f"schedule {self.name}: {exc}") from None
        if not self.job_type or len(self.job_type) > 200 or self.job_type.startswith("reactor."):
            raise ValueError(f"schedule {self.name}: a job type is 1 to 200 characters, not reactor.*")
        if not TABLE_NAME.match(self.table):
            raise ValueError(f"schedule {self.name}: invalid job table name {self.table!r}")
        if not 1 <= self.catch_up <= MAX_CATCH_UP_SECONDS:
            raise ValueError(f"schedule {self.name}: catch_up must be from 1 to {MAX_CATCH_UP_SECONDS} s")
        if not -(2**31) <= self.priority < 2**31:
            raise ValueError(f"schedule {self.name}: priority must fit in 32 bits")
        if not 1 <= self.max_attempts <= 1000:
            raise ValueError(f"schedule {self.name}: max_attempts must be from 1 to 1000")
        try:
            json.dumps(self.payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"schedule {self.name}: the payload must be JSON: {exc}") from None

    def declaration(self) -> dict[str, Any]:
        """The schedule as reactor_fire_schedules declares it."""
        return {
            "name": self.name,
            "table": self.table,
            "job_type": self.job_type,
            "cron": " ".join(self.cron.split()),
            "time_zone": self.time_zone,
            "payload": self.payload,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "catch_up_seconds": self.catch_up,
        }


def next_run(schedule: dict[str, Any], now: datetime) -> str | None:
    """When the schedule next enqueues a job: its first time not yet fired, within its catch-up
    window. One already past means no worker has fired it; None, an expression no worker reads."""
    try:
        cron = Cron.parse(schedule["cron"], schedule["time_zone"])
    except CronError:
        return None
    fired_through = datetime.fromisoformat(schedule["fired_through"])
    start = max(fired_through, now - timedelta(seconds=schedule["catch_up_seconds"]))
    return cron.next_after(start).astimezone(cron.zone).isoformat()
