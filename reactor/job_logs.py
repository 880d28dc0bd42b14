"""A running job's log lines on their way to public.job_logs (sql/migrations/0016), where the job's
owner reads them under RLS and watches them over Realtime.

`await job.log(message)` sends its line at once; lines written while one of the job's sends is in
flight join the next, so a handler's concurrent tasks share requests. Every line is redacted and
made storable first, as errors are, and also goes to the worker's own log at its level.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reactor.redact import Redactor
from reactor.store import MAX_BATCH, JobStore, StoreError

if TYPE_CHECKING:
    from reactor.job import Job

LEVELS = ("debug", "info", "warning", "error")
MAX_LOG_LINES = 1000  # reactor.max_log_lines() (tests/contract/test_constants.py)
MAX_LINE_CHARACTERS = 2000  # public.job_logs.message's check


def line(job: Job, redactor: Redactor, message: str, level: str) -> dict[str, Any]:
    """A line as reactor_log takes it, checked."""
    if level not in LEVELS:
        raise ValueError(f"a log level is one of {', '.join(LEVELS)}, not {level!r}")
    if not isinstance(message, str):
        raise ValueError(f"a log line is text, not {type(message).__name__}")
    return {
        "id": job.id,
        "lease_token": job.lease_token,
        "level": level,
        "message": redactor.storable(message)[:MAX_LINE_CHARACTERS],
        "logged_at": datetime.now(UTC).isoformat(),
    }


class JobLog:
    def __init__(self, store: JobStore, redactor: Redactor, job: Job) -> None:
        self._store = store
        self._redactor = redactor
        self._job = job
        self._lines: list[dict[str, Any]] = []
        self._sending = False
        self._held = True  # False once a send found the lease gone
        self._capped = False

    async def write(self, message: str, level: str) -> bool:
        self._lines.append(line(self._job, self._redactor, message, level))
        self._job.logger.log(level.upper(), self._lines[-1]["message"])
        if self._sending:
            return self._held  # the send in flight takes this line with it
        self._sending = True
        try:
            while self._lines and self._held:
                batch, self._lines = self._lines[:MAX_BATCH], self._lines[MAX_BATCH:]
                await self._send(batch)
        finally:
            self._sending = False
        return self._held

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        job = self._job
        try:
            answer = await self._store.log(job.table, batch)
        except StoreError as exc:
            job.logger.warning(f"could not store {len(batch)} log line(s) of the job: {exc}")
            return
        if answer["stale"]:
            self._held = False
            self._lines.clear()
        elif answer["dropped"] and not self._capped:
            self._capped = True
            job.logger.warning(f"the job has written {MAX_LOG_LINES} log lines; later ones are not stored")
