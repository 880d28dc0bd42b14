"""A claimed or handed-off job row, read into a `Job` on its own.

Rows are written by users (docs/reliability.md, "Hostile rows"): one that cannot be read must cost
its own job, never the worker or the rest of its batch. `read` raises `Unreadable` for such a
row; when the row's id and lease token were readable the job can still be failed for good with
the reason, otherwise the reaper hands it back.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reactor.job import Job

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@dataclass
class Unreadable(Exception):
    """A row the worker cannot run. `lease` is {id, lease_token} when those could be read."""

    reason: str
    lease: dict[str, Any] | None

    def __str__(self) -> str:
        return self.reason


def read(table: str, row: Any, attempt_column: str = "attempt") -> Job:
    """The `Job` a claim's row (or, with attempt_column "attempts", a hand-off's record) holds."""
    if not isinstance(row, dict):
        raise Unreadable(f"a row of {table} is not an object", None)
    job_id = _integer(row.get("id"))
    token = _uuid(row.get("lease_token"))
    if job_id is None or token is None:
        raise Unreadable(f"a row of {table} has no usable id or lease token", None)
    lease = {"id": job_id, "lease_token": token}
    try:
        job_type = row["job_type"]
        if not isinstance(job_type, str):
            raise ValueError("job_type is not text")
        attempt = _required_integer(row, attempt_column)
        max_attempts = _required_integer(row, "max_attempts")
        priority = _integer(row.get("priority", 0))
        if priority is None:
            raise ValueError("priority is not an integer")
        user_id = _uuid(row.get("user_id"))
        if user_id is None and row.get("user_id") is not None:
            raise ValueError("user_id is not a UUID")
        resumed = _integer(row.get("resumed", 0))
        if resumed is None:
            raise ValueError("resumed is not an integer")
        parent_id = row.get("parent_id")
        if parent_id is not None and _integer(parent_id) is None:
            raise ValueError("parent_id is not an integer")
        return Job(
            id=job_id,
            table=table,
            job_type=job_type,
            payload=row.get("payload"),
            attempt=attempt,
            max_attempts=max_attempts,
            lease_token=token,
            priority=priority,
            run_at=_time(row.get("run_at"), "run_at"),
            created_at=_time(row.get("created_at"), "created_at"),
            user_id=user_id,
            resumed=resumed,
            parent_id=parent_id,
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise Unreadable(f"the job's row cannot be read: {_reason(exc)}", lease) from exc


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _required_integer(row: dict[str, Any], column: str) -> int:
    value = _integer(row[column])
    if value is None:
        raise ValueError(f"{column} is not an integer")
    return value


def _uuid(value: Any) -> str | None:
    """A UUID as Postgres prints it, checked by pattern (a claim reads thousands a second), else
    parsed; None when it is not one."""
    if not isinstance(value, str):
        return None
    if _CANONICAL_UUID.match(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def timestamp(value: Any) -> datetime | None:
    """A timestamp as PostgREST and Realtime write one, without a zone read as UTC; None when the
    value is not one (the listener's reading of a change's times, and the claim's below)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _time(value: Any, column: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{column} is not a timestamp")
    parsed = timestamp(value)
    if parsed is None:
        raise ValueError(f"{column} {value[:40]!r} is not a timestamp this worker can read")
    return parsed


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"column {exc.args[0]} is missing"
    return str(exc) or type(exc).__name__
