"""Run a handler in a unit test, with no database and no local stack.

    done = await perform(app, "send_email", {"to": "ada@example.com"})
    assert done.outcome.kind == "completed"

The job is built as a claim builds it and the handler runs under its timeout through the same code
the worker uses (reactor/executor.py), so `outcome` is what the worker would write to the row:
`completed` with the result, `retried` with the error and the retry time, `waiting` for its
children, or `failed` with the error. `progress` lists what the handler reported with
`set_progress`, `logs` the lines it wrote with `job.log`, `spawned` the children it asked for
(with their keys); `children=` gives a run that was resumed (`resumed=1`) the outcomes its
`job.children()` reads. The app's middleware (`@app.middleware`) runs around the handler as in
the worker; completion hooks do not run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio

from reactor import executor
from reactor.app import Reactor
from reactor.executor import Outcome
from reactor.family import Child, checked
from reactor.job import Job
from reactor.job_logs import line
from reactor.redact import Redactor
from reactor.retry import RetryPolicy


@dataclass(frozen=True)
class Performed:
    outcome: Outcome
    progress: list[tuple[int, str | None]]
    spawned: list[dict[str, Any]]
    logs: list[tuple[str, str]]  # (level, message) of each line `job.log` wrote


class _Children:
    """A job's children with no database: spawns recorded, ids counted from 2, outcomes given."""

    def __init__(self, job: Job, children: list[Child]) -> None:
        self._job = job
        self._children = children
        self.recorded: list[dict[str, Any]] = []
        self.spawned = 0

    async def spawn(self, children: Iterable[dict[str, Any]]) -> list[int]:
        ids = []
        for child in children:
            item = checked(child)
            if item["key"] is None:
                item["key"] = f"{self._job.resumed}.{self.spawned}"
            self.spawned += 1
            known = [i for i, seen in enumerate(self.recorded) if seen["key"] == item["key"]]
            if not known:
                self.recorded.append(item)
            ids.append(2 + (known[0] if known else len(self.recorded) - 1))
        return ids

    async def children(self) -> list[Child]:
        return list(self._children)


class _Log:
    """A job's log with no database: each line as it would be stored."""

    def __init__(self, job: Job, lines: list[tuple[str, str]]) -> None:
        self._job = job
        self._lines = lines

    async def write(self, message: str, level: str) -> bool:
        self._lines.append((level, line(self._job, Redactor([]), message, level)["message"]))
        return True


class _Services:
    """The worker's side of one performed job: progress and log lines recorded, children given."""

    def __init__(self, children: _Children) -> None:
        self._children = children
        self.progressed: list[tuple[int, str | None]] = []
        self.logs: list[tuple[str, str]] = []

    async def progress(self, job: Job, percent: int, message: str | None) -> bool:
        self.progressed.append((percent, message))
        return True

    def family(self, job: Job) -> _Children:
        return self._children

    def job_log(self, job: Job) -> _Log:
        return _Log(job, self.logs)


async def perform(
    app: Reactor,
    job_type: str,
    payload: Any = None,
    *,
    table: str = "jobs",
    attempt: int = 1,
    max_attempts: int = 5,
    user_id: str | None = None,
    priority: int = 0,
    policy: RetryPolicy | None = None,
    resumed: int = 0,
    children: list[Child] | None = None,
) -> Performed:
    """Run `app`'s handler for `job_type` once, as attempt `attempt` of a job with this payload.

    `policy` stands in for the worker's retry settings (default: the worker's defaults); a handler
    with its own `retry` uses that instead, as in the worker.
    """
    handler = app.registry(table).get(table, job_type)
    if handler is None:
        raise LookupError(f"no handler for job type {job_type!r} in table {table!r}")
    now = datetime.now(UTC)
    job = Job(
        id=1,
        table=table,
        job_type=job_type,
        payload={} if payload is None else payload,
        attempt=attempt,
        max_attempts=executor.max_attempts(handler, max_attempts),
        lease_token="00000000-0000-4000-8000-000000000001",
        priority=priority,
        run_at=now,
        created_at=now,
        user_id=user_id,
        resumed=resumed,
    )
    services = _Services(_Children(job, children or []))
    job._services = services
    policy = policy or RetryPolicy()
    outcome: Outcome | None = None
    with anyio.move_on_after(handler.timeout or float("inf")):
        outcome = await executor.call(job, handler, policy, app.middlewares)
    if outcome is None:
        outcome = executor.timed_out(job, handler, policy)
    return Performed(outcome, services.progressed, services.family(job).recorded, services.logs)
