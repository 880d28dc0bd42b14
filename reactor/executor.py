"""Running one job: calling its handler, and what the way the handler ended means for the row.

The worker's dispatcher runs a job under its lease and reports the `Outcome`; `reactor.testing`
runs the same code with no database. Nothing here talks to the API.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reactor.handlers import Handler, HandlerFunction
from reactor.job import Job, PermanentError, RetryLater, Snooze, WaitForChildren
from reactor.retry import RetryPolicy

# `async def middleware(job, call_next)`: runs around every handler call, in registration order
# (the first registered is outermost); `await call_next(job)` runs the rest and returns the result.
Middleware = Callable[[Job, HandlerFunction], Awaitable[Any]]


@dataclass(frozen=True)
class Outcome:
    """What becomes of the row: `completed` (with `result`), `retried` (with `error` and
    `retry_at`), `snoozed` (with `retry_at`: no attempt spent), `waiting` for its children (no
    attempt spent) or `failed` for good (with `error`)."""

    kind: str
    result: Any = None
    error: str | None = None
    retry_at: datetime | None = None

    def item(self) -> dict[str, Any]:
        """The fields of this outcome in a reactor_complete, reactor_fail, reactor_snooze or reactor_wait
        batch item."""
        if self.kind == "completed":
            return {"result": self.result}
        if self.kind == "failed":
            return {"error": self.error, "permanent": True}
        if self.kind == "waiting":
            return {}
        assert self.retry_at is not None
        if self.kind == "snoozed":
            return {"error": self.error, "retry_at": self.retry_at.isoformat()}
        return {"error": self.error, "retry_at": self.retry_at.isoformat()}


async def call(
    job: Job, handler: Handler, policy: RetryPolicy, middleware: Sequence[Middleware] = ()
) -> Outcome:
    """Run the handler, inside `middleware`, and classify how it ended; its timeout is the
    caller's to enforce. A middleware that raises counts as the handler raising."""
    if job.attempt > job.max_attempts:
        # A reaped job counts its attempts against the row's limit; the handler's may be lower.
        return Outcome(
            "failed", error=f"attempts exhausted: attempt {job.attempt} of at most {job.max_attempts}"
        )
    function = chain(handler.function, middleware) if middleware else handler.function
    try:
        result = await function(job)
    except Exception as exc:
        if not isinstance(exc, RetryLater | PermanentError | WaitForChildren):
            job.logger.opt(exception=exc).debug("handler raised")
        return classify(job, handler, policy, exc)
    try:
        if result is not None:
            json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return failure(
            job, handler, policy, f"the handler's result is not JSON: {_message(exc)}", permanent=True
        )
    return Outcome("completed", result=result)


def classify(job: Job, handler: Handler | None, policy: RetryPolicy, exc: Exception) -> Outcome:
    """What the handler raising `exc` makes of the job (`handler` None: the worker's policy)."""
    if isinstance(exc, Snooze):
        return Outcome("snoozed", error=str(exc), retry_at=exc.retry_at())
    if isinstance(exc, WaitForChildren):
        if not job.spawned:
            # Waiting with no child asked for would wake at once and run again, for ever.
            error = "WaitForChildren: the handler waited without spawning a child in this run"
            return failure(job, handler, policy, error)
        return Outcome("waiting")
    if isinstance(exc, RetryLater):
        return failure(job, handler, policy, str(exc), retry_at=exc.retry_at())
    if isinstance(exc, PermanentError):
        return failure(job, handler, policy, describe(exc), permanent=True)
    return failure(job, handler, policy, describe(exc))


def chain(function: HandlerFunction, middleware: Sequence[Middleware]) -> HandlerFunction:
    """`function` wrapped in `middleware`, the first outermost."""
    for outer in reversed(middleware):
        function = _link(outer, function)
    return function


def _link(middleware: Middleware, call_next: HandlerFunction) -> HandlerFunction:
    async def link(job: Job) -> Any:
        return await middleware(job, call_next)

    return link


def timed_out(job: Job, handler: Handler, policy: RetryPolicy) -> Outcome:
    return failure(job, handler, policy, f"timed out after {handler.timeout} s")


def failure(
    job: Job,
    handler: Handler | None,
    policy: RetryPolicy,
    error: str,
    *,
    permanent: bool = False,
    retry_at: datetime | None = None,
) -> Outcome:
    """A failed attempt: retried at `retry_at` (default: the handler's backoff, else the worker's),
    or failed for good when it is permanent or was the last attempt."""
    if permanent or job.attempt >= job.max_attempts:
        return Outcome("failed", error=error)
    if retry_at is None:
        delay = ((handler and handler.retry) or policy).delay(job.attempt)
        retry_at = datetime.now(UTC) + timedelta(seconds=delay)
    return Outcome("retried", error=error, retry_at=retry_at)


def max_attempts(handler: Handler, row_limit: int) -> int:
    """The attempts a job gets: the row's limit, lowered by the handler's."""
    return min(row_limit, handler.max_attempts) if handler.max_attempts else row_limit


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_message(exc)}"


def _message(exc: BaseException) -> str:
    """An exception's message, even when making it raises."""
    try:
        return str(exc)
    except Exception:
        return "(its message could not be read)"
