"""What a handler receives (`Job`) and the two ways it can steer a retry (`RetryLater`, `PermanentError`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger as _root_logger

if TYPE_CHECKING:
    from reactor.family import Child, Family
    from reactor.job_logs import JobLog


class RetryLater(Exception):
    """Raise from a handler to run the job again after `delay` (seconds or a timedelta) or at `at`.

    The attempt counts; when it was the last one the job fails for good.
    """

    def __init__(self, delay: float | timedelta | None = None, *, at: datetime | None = None) -> None:
        if (delay is None) == (at is None):
            raise ValueError("RetryLater takes a delay or an `at` time, exactly one of them")
        if at is not None and at.tzinfo is None:
            raise ValueError("RetryLater(at=...) needs a timezone-aware datetime")
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if seconds is not None and seconds < 0:
            raise ValueError("RetryLater delay must not be negative")
        self.delay = seconds
        self.at = at
        super().__init__(f"retry requested {'at ' + at.isoformat() if at else f'in {seconds} s'}")

    def retry_at(self) -> datetime:
        return self.at if self.at is not None else datetime.now(UTC) + timedelta(seconds=self.delay or 0)


class Snooze(RetryLater):
    """Raise from a handler to run the job again after `delay` or at `at` without spending an
    attempt: for a job that waits on something (a file not ready, a partner's quiet hours), not
    one that failed. The job goes back to `pending` until then."""


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the job goes straight to `failed`."""


class WaitForChildren(Exception):
    """Raise from a handler once it has spawned children: the job waits, its attempt unspent
    (status `waiting`), until every child has finished (completed, failed for good or cancelled),
    then runs again with `resumed` one higher and reads what came of them with `children()`."""

    def __init__(self) -> None:
        super().__init__("waiting for its children")


class LeaseLost(Exception):
    """The job's lease went to another worker, or the job was cancelled: it can spawn no more."""


class JobServices(Protocol):
    """What a job reaches its worker through: one object serves every job of a worker, and a job
    makes its log and its family only when its handler first uses them. So a finished job is in
    no reference cycle and is freed at once, rather than left for the cyclic garbage collector,
    whose passes over thousands of running jobs took a third of the worker's time in a drain
    (docs/benchmarks.md, "Where a no-op job's CPU went")."""

    async def progress(self, job: Job, percent: int, message: str | None) -> bool: ...

    def family(self, job: Job) -> Family: ...

    def job_log(self, job: Job) -> JobLog: ...


@dataclass
class Job:
    """One claimed job, as its handler sees it.

    `attempt` counts from 1 and `lease_token` changes with every claim, so a handler can make its
    side effects idempotent: delivery is at least once. `user_id` is the row's owner, set by the
    database to whoever inserted it: the one to act for and to bill. The payload is the user's to
    write, so never take an identity from it.
    """

    id: int
    table: str
    job_type: str
    payload: Any
    attempt: int
    max_attempts: int
    lease_token: str
    priority: int = 0
    run_at: datetime | None = None
    created_at: datetime | None = None
    user_id: str | None = None
    resumed: int = 0  # how often its children finishing woke it (WaitForChildren)
    parent_id: int | None = None  # the job that spawned this one
    log_context: dict[str, Any] = field(default_factory=dict, repr=False)  # the fields of its log lines
    _services: JobServices | None = field(default=None, repr=False)
    _logger: Any = field(default=None, repr=False)
    _family: Family | None = field(default=None, repr=False)
    _log: JobLog | None = field(default=None, repr=False)

    @property
    def logger(self) -> Any:
        """loguru's logger bound to this job's `log_context`, built the first time it is asked for,
        so that a job whose handler and outcome write no log line never pays for binding one."""
        if self._logger is None:
            self._logger = _root_logger.bind(**self.log_context)
        return self._logger

    async def set_progress(self, percent: int, message: str | None = None) -> bool:
        """Write progress (0-100) and a short message to the row; False once the lease is lost."""
        if not 0 <= percent <= 100:
            raise ValueError(f"progress must be between 0 and 100, got {percent}")
        if self._services is None:
            return False
        return await self._services.progress(self, percent, message)

    async def log(self, message: str, level: str = "info") -> bool:
        """Write a line the job's owner reads (public.job_logs, at most 1,000 a job) and the
        worker's log; `level` is debug, info, warning or error. False once the lease is lost."""
        if self._log is None:
            if self._services is None:
                raise RuntimeError("this job was not claimed by a worker, so it has no log")
            self._log = self._services.job_log(self)
        return await self._log.write(message, level)

    async def spawn(
        self,
        job_type: str,
        payload: Any = None,
        *,
        key: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Make a child job of this job's table, acting for the same owner; its id. `key` makes
        it once however often this job runs (default: its place among this run's spawns);
        `priority` defaults to this job's. Then `raise WaitForChildren()` to run again once the
        children have finished."""
        [child] = await self.spawn_all(
            [
                {
                    "job_type": job_type,
                    "payload": payload,
                    "key": key,
                    "priority": priority,
                    "run_at": run_at,
                    "max_attempts": max_attempts,
                }
            ]
        )
        return child

    async def spawn_all(self, children: Iterable[dict[str, Any]]) -> list[int]:
        """Make many children in one request: each a dict of `spawn`'s arguments by name."""
        return await self._children().spawn(children)

    async def children(self) -> list[Child]:
        """What came of this job's children, in the order they were spawned."""
        return await self._children().children()

    @property
    def spawned(self) -> int:
        """How many children this run asked for."""
        return 0 if self._family is None else self._family.spawned

    def _children(self) -> Family:
        if self._family is None:
            if self._services is None:
                raise RuntimeError("this job was not claimed by a worker, so it has no children")
            self._family = self._services.family(self)
        return self._family
