"""Completion hooks: Python run after a job's outcome is recorded (`@app.on_finished`).

The reporter calls `Hooks.recorded` once the database's answer says a job completed or failed for
good, and the runner once it heard that a job it ran was cancelled; never for a retried attempt,
a snooze, a wait for children or a report whose lease was stale. `recorded` only queues: hooks
run on their own tasks, at most `concurrency` at once, so a slow or hanging hook never holds up
the reporter or the claim loop. A hook that raises (or outlives its timeout) is tried again with
backoff up to its `retries`, then logged; it cannot change the job, which is already recorded.

Delivery is at most once per outcome per worker process: the queue is in memory, so a crash
between recording and running loses the hook, and at shutdown hooks still queued or running when
the grace period is over are logged as not run. A full queue (`backlog`) logs the hook as not run
rather than hold up the reporter.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from reactor.job import Job
from reactor.redact import Redactor
from reactor.retry import RetryPolicy

BACKLOG = 10_000  # hooks waiting for a free slot; past this, one is logged as not run


@dataclass(frozen=True)
class Finished:
    """What was recorded for a job: `kind` is `completed` (with `result`), `failed` (for good, with
    `error`, as stored in the row) or `cancelled`; `attempt` is the attempt that ended it."""

    kind: str
    result: Any = None
    error: str | None = None
    attempt: int = 0


HookFunction = Callable[[Job, Finished], Awaitable[Any]]


@dataclass(frozen=True)
class Hook:
    function: HookFunction
    job_type: str | None  # None: every job type
    retries: int = 3  # tries after the first
    timeout: float | None = 30.0  # seconds per try
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(1.0, 60.0))

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a whole number of at least 0, not {self.retries!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError("a hook's timeout must be above 0 seconds, or None")

    @property
    def name(self) -> str:
        function = self.function
        qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
        return f"{getattr(function, '__module__', None) or '?'}.{qualname}"


@dataclass
class _Call:
    hook: Hook
    job: Job
    finished: Finished
    tries: int = 0


class Hooks:
    def __init__(
        self, hooks: Sequence[Hook], redactor: Redactor, concurrency: int, backlog: int = BACKLOG
    ) -> None:
        self._hooks = tuple(hooks)
        self._redactor = redactor  # errors reach hooks as they are stored in the row
        self._concurrency = max(1, concurrency)
        self._send: MemoryObjectSendStream[_Call]
        self._receive: MemoryObjectReceiveStream[_Call]
        self._send, self._receive = anyio.create_memory_object_stream[_Call](backlog)
        self._give_up = anyio.CancelScope()
        self._calls: dict[int, _Call] = {}  # the calls under way, by id, to log those cut short

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def recorded(self, job: Job, kind: str, item: dict[str, Any]) -> None:
        """The database recorded `kind` (completed, failed, cancelled) for `job`: queue its hooks.
        Never blocks and never raises."""
        if not self._hooks:
            return
        hooks = [h for h in self._hooks if h.job_type is None or h.job_type == job.job_type]
        if not hooks:
            return
        error = item.get("error")
        finished = Finished(
            kind,
            result=item.get("result"),
            error=None if error is None else self._redactor.storable(error),
            attempt=job.attempt,
        )
        for hook in hooks:
            call = _Call(hook, job, finished)
            try:
                self._send.send_nowait(call)
            except anyio.WouldBlock:
                _not_run(call, f"{self._send.statistics().current_buffer_used} hooks are waiting already")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                _not_run(call, "the worker is shutting down")

    def close(self, deadline: float) -> None:
        """No more outcomes will come: `run` returns once every queued hook has run, or at
        `deadline` (anyio's clock), logging those it had to cut short or never started."""
        self._send.close()
        self._give_up.deadline = deadline

    async def run(self) -> None:
        with self._give_up:
            async with anyio.create_task_group() as group:
                for _ in range(self._concurrency):
                    group.start_soon(self._take, name="hook runner")
        for call in self._calls.values():
            _not_run(call, "the grace period ended while it ran; it was cancelled")
        while True:
            try:
                call = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            _not_run(call, "the grace period ended before it started")
        self._receive.close()

    async def _take(self) -> None:
        async for call in self._receive:
            self._calls[id(call)] = call
            await self._run(call)
            del self._calls[id(call)]

    async def _run(self, call: _Call) -> None:
        hook = call.hook
        while True:
            call.tries += 1
            try:
                with anyio.fail_after(hook.timeout or math.inf):
                    await hook.function(call.job, call.finished)
                return
            except Exception as exc:  # a timeout is a TimeoutError
                error = exc
            if call.tries > hook.retries:
                log = call.job.logger.bind(hook=hook.name, hook_tries=call.tries, outcome=call.finished.kind)
                log.opt(exception=error).error(
                    f"hook {hook.name} failed {call.tries} times, giving up: {_describe(error)}"
                )
                return
            await anyio.sleep(hook.retry.delay(call.tries))


def _not_run(call: _Call, why: str) -> None:
    log = call.job.logger.bind(hook=call.hook.name, hook_tries=call.tries, outcome=call.finished.kind)
    log.error(f"hook {call.hook.name} not run: {why}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: it ran past its timeout"
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__
