"""Helpers for worker tests: insert jobs, run a worker in this process or as a real `reactor run`
subprocess, and wait. The `stack` fixture they run against is in fixtures.py."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg

from reactor import Job, Reactor
from reactor.config import Config, load

if TYPE_CHECKING:
    from reactor.devstack.stack import Stack

FAST = {  # short leases and sweeps keep tests quick; each test overrides what it is about
    "lease_seconds": 3,
    "poll_fast_seconds": 0.2,
    "poll_slow_seconds": 0.2,
    "reap_seconds": 0.5,
    "stats_seconds": 30.0,
    "grace_seconds": 5.0,
    "retry_base_seconds": 60.0,
    "health_port": None,
    "realtime": False,
}


def worker_config(stack: Stack, **overrides: Any) -> Config:
    return load(
        {"SUPABASE_URL": stack.url, "SUPABASE_SERVICE_ROLE_KEY": stack.keys.service_role},
        **{**FAST, **overrides},
    )


@asynccontextmanager
async def running(app: Reactor, config: Config) -> AsyncIterator[Reactor]:
    """Run `app` in this event loop; on exit, shut it down gracefully and wait for it to stop."""
    app.worker = None
    async with anyio.create_task_group() as group:
        group.start_soon(app.serve, config)
        try:
            await wait_until(lambda: _true(app.worker is not None))
            yield app
        finally:
            app.stop()


async def insert(
    db: asyncpg.Connection, job_type: str, payload: Any = None, table: str = "jobs", **columns: Any
) -> int:
    names = ["job_type", "payload", *columns]
    values = [job_type, json.dumps(payload if payload is not None else {}), *columns.values()]
    marks = ", ".join(f"${i + 1}" + ("::jsonb" if n == "payload" else "") for i, n in enumerate(names))
    return await db.fetchval(
        f"insert into public.{table} ({', '.join(names)}) values ({marks}) returning id", *values
    )


async def row(db: asyncpg.Connection, job_id: int, table: str = "jobs") -> asyncpg.Record:
    return await db.fetchrow(f"select * from public.{table} where id = $1", job_id)


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy; a safety net, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await anyio.sleep(0.05)


async def status_is(
    db: asyncpg.Connection, job_id: int, *statuses: str, timeout: float = 20.0
) -> asyncpg.Record:
    async def check() -> asyncpg.Record | None:
        found = await row(db, job_id)
        return found if found["status"] in statuses else None

    return await wait_until(check, timeout)


def worker_env(stack: Stack, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "SUPABASE_"))}
    env.update(
        {
            "SUPABASE_URL": stack.url,
            "SUPABASE_SERVICE_ROLE_KEY": stack.keys.service_role,
            "REACTOR_LEASE_SECONDS": "3",
            "REACTOR_POLL_FAST_SECONDS": "0.2",
            "REACTOR_POLL_SLOW_SECONDS": "0.2",
            "REACTOR_REAP_SECONDS": "0.5",
            "REACTOR_HEALTH_PORT": "off",
            "REACTOR_REALTIME": "off",
            "REACTOR_RETRY_BASE_SECONDS": "60",
        }
    )
    env.update(variables)
    return env


REACTOR_COMMAND = [sys.executable, "-m", "reactor.cli", "run"]


class WorkerProcess:
    """A `reactor run` subprocess whose output is collected as it comes."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.stdout = bytearray()
        self.stderr = bytearray()

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).decode(errors="replace")

    async def collect(self) -> None:
        async def drain(stream: Any, into: bytearray) -> None:
            async for chunk in stream:
                into.extend(chunk)

        async with anyio.create_task_group() as group:
            group.start_soon(drain, self.process.stdout, self.stdout)
            group.start_soon(drain, self.process.stderr, self.stderr)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 30.0) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()

    async def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        async def seen() -> bool:
            return text in self.output

        try:
            await wait_until(seen, timeout)
        except AssertionError as exc:
            raise AssertionError(
                f"{text!r} not printed within {timeout} s; output:\n{self.output[-3000:]}"
            ) from exc


@asynccontextmanager
async def worker_process(
    env: dict[str, str], app: str = "tests.worker.apps:app"
) -> AsyncIterator[WorkerProcess]:
    async with await anyio.open_process([*REACTOR_COMMAND, app], env=env) as process:
        worker = WorkerProcess(process)
        async with anyio.create_task_group() as group:
            group.start_soon(worker.collect)
            try:
                yield worker
            finally:
                if process.returncode is None:
                    process.kill()
                await process.wait()


NO_POLLING = {  # no ticks at all: reaping and statistics ride on them too
    "realtime": True,
    "poll_fast_seconds": 600.0,
    "poll_slow_seconds": 600.0,
    "reap_seconds": 600.0,
    "stats_seconds": 600.0,
}


def echo_app() -> Reactor:
    app = Reactor()

    @app.handler("echo")
    async def echo(job: Job) -> object:
        return job.payload

    return app


async def subscribed(app: Reactor, times: int = 1) -> None:
    """Wait for the `times`-th subscription to be live: its "Replication connection established" arrived."""

    async def check() -> bool:
        listener = app.worker.listener
        return (
            listener is not None
            and listener.healthy()
            and min(app.metrics.events["realtime_subscriptions"], app.metrics.events["realtime_live"])
            >= times
        )

    await wait_until(check, timeout=30)


async def _true(value: bool) -> bool:
    return value


def claims(app: Reactor) -> int:
    """The claim requests the worker has made so far."""
    return sum(n for (function, _), n in app.worker.store.calls.items() if function == "reactor_claim_jobs")
