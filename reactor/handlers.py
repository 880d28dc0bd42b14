"""Handlers and their registry: which function runs a job type, in which table, under what limits."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from reactor.config import TABLE_NAME
from reactor.job import Job
from reactor.retry import RetryPolicy

HandlerFunction = Callable[[Job], Awaitable[Any]]


@dataclass(frozen=True)
class Handler:
    job_type: str
    function: HandlerFunction
    table: str
    timeout: float | None
    max_attempts: int | None  # at most this many attempts, even if the row allows more
    retry: RetryPolicy | None  # None: the worker's default policy
    # Fleet-wide limits (sql/migrations/0012), as reactor_set_limits takes them; they seed the
    # database's row for the type, which stays the one source of truth.
    limits: dict[str, int] | None = None


_RATE = re.compile(r"^(\d+)\s*/\s*(\d*)\s*(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def limits(concurrency: int | None, rate: str | None, per_user: int | None) -> dict[str, int] | None:
    """The limits a handler declares, checked: `rate` as "2/s", "100/m", "5/10s" or "1000/d"."""
    found: dict[str, int] = {}
    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a whole number of at least 1, not {concurrency!r}")
        found["concurrency"] = concurrency
    if rate is not None:
        match = _RATE.match(rate.strip()) if isinstance(rate, str) else None
        if match is None:
            raise ValueError(f"rate {rate!r} is not a rate: give e.g. '2/s', '100/m', '5/10s' or '1000/d'")
        starts, count, unit = int(match[1]), int(match[2] or 1), match[3]
        per_seconds = count * _UNIT_SECONDS[unit]
        if not 1 <= starts <= 10000 or not 1 <= per_seconds <= 86400:
            raise ValueError(f"rate {rate!r}: 1 to 10000 starts in 1 s to 1 day")
        found |= {"rate": starts, "per_seconds": per_seconds}
    if per_user is not None:
        if isinstance(per_user, bool) or not isinstance(per_user, int) or per_user < 1:
            raise ValueError(f"per_user must be a whole number of at least 1, not {per_user!r}")
        found["per_user"] = per_user
    return found or None


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}

    def add(self, handler: Handler) -> None:
        if not handler.job_type or len(handler.job_type) > 200:
            raise ValueError("a job type is 1 to 200 characters")
        if not TABLE_NAME.match(handler.table):
            raise ValueError(f"invalid job table name {handler.table!r}")
        if handler.timeout is not None and not handler.timeout > 0:
            raise ValueError(f"{handler.job_type}: timeout must be above 0 seconds")
        if handler.max_attempts is not None and not 1 <= handler.max_attempts <= 1000:
            raise ValueError(f"{handler.job_type}: max_attempts must be from 1 to 1000")
        key = (handler.table, handler.job_type)
        if key in self._handlers:
            raise ValueError(f"a handler for {handler.job_type!r} in table {handler.table!r} exists already")
        self._handlers[key] = handler

    def get(self, table: str, job_type: str) -> Handler | None:
        return self._handlers.get((table, job_type))

    def tables(self) -> list[str]:
        return sorted({table for table, _ in self._handlers})

    def limits(self, table: str) -> dict[str, dict[str, int]]:
        """The limits the handlers of `table` declare, by job type."""
        return {h.job_type: h.limits for (t, _), h in self._handlers.items() if t == table and h.limits}

    def job_types(self, table: str) -> list[str]:
        return sorted(job_type for t, job_type in self._handlers if t == table)

    def __len__(self) -> int:
        return len(self._handlers)
