"""What keeps the pages live, within hosted Supabase's Realtime budget.

The overview never subscribes to the job tables: every claim, heartbeat and progress write is an
UPDATE, and each one would be a Realtime message billed to the project. Instead one loop reads the
aggregates (reactor_stats, the running jobs, the recent outcomes) every `refresh` seconds while
at least one browser watches, whatever the number of browsers, and nothing while none does.

A job's page is narrow enough for Realtime: one channel filtered on `id=eq.N`, so it hears that
row's changes and no other, and only while the job can still change (not once it is finished).
Each change triggers one read of the row. While Realtime is down or not yet live, the row is
polled every `poll` seconds instead, and even while live it is read every `safety` seconds, since
Realtime delivers at most once.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from loguru import logger
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from reactor.dashboard import activity
from reactor.dashboard.project import Project
from reactor.schedules import next_run
from reactor.store import StoreError

FINAL = ("completed", "failed", "cancelled")
WINDOW_MINUTES = 15
FINISHED_LIMIT = 1000  # the most recent outcomes read for one table's window
RUNNING_LIMIT = 1000


@dataclass
class TableView:
    table: str
    stats: dict[str, Any] | None = None
    types: list[activity.TypeRow] = field(default_factory=list)
    minutes: list[activity.Minute] = field(default_factory=list)
    workers: list[activity.WorkerRow] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    window_full: bool = False  # FINISHED_LIMIT outcomes came back: the window is cut short
    error: str | None = None


@dataclass
class Snapshot:
    at: datetime
    tables: list[TableView]


def _datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class Overview:
    def __init__(self, project: Project, tables: tuple[str, ...], refresh_seconds: float) -> None:
        self._project = project
        self._tables = tables
        self._refresh = refresh_seconds
        self._subscribers: set[MemoryObjectSendStream[Snapshot]] = set()
        self._wanted = anyio.Event()
        self.latest: Snapshot | None = None

    async def read(self) -> Snapshot:
        now = datetime.now(UTC)
        return Snapshot(now, [await self._table(table, now) for table in self._tables])

    async def _table(self, table: str, now: datetime) -> TableView:
        view = TableView(table)
        try:
            view.stats = await self._project.stats(table)
            running = await self._project.running(table, RUNNING_LIMIT)
            since = now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)
            finished = await self._project.finished_since(table, since, FINISHED_LIMIT)
            view.schedules = [
                {**found, "next_run_at": upcoming, "overdue": upcoming is not None and upcoming < now}
                for found in await self._project.schedules(table)
                for upcoming in [_datetime(next_run(found, now))]
            ]
        except StoreError as exc:
            view.error = str(exc)
            return view
        view.running = len(running)
        view.window_full = len(finished) >= FINISHED_LIMIT
        view.types = activity.by_type(view.stats["pending_by_type"], finished, running)
        view.minutes = activity.per_minute(finished, now, WINDOW_MINUTES)
        view.workers = activity.workers(running)
        return view

    async def run(self) -> None:
        """Read and hand out a snapshot every `refresh` seconds while anyone is subscribed."""
        while True:
            if not self._subscribers:
                self._wanted = anyio.Event()
                await self._wanted.wait()
            self.latest = snapshot = await self.read()
            for send in list(self._subscribers):
                try:
                    send.send_nowait(snapshot)
                except anyio.WouldBlock:
                    continue  # that browser is still taking the last one
            await anyio.sleep(self._refresh)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[Snapshot]]:
        send, receive = anyio.create_memory_object_stream[Snapshot](1)
        self._subscribers.add(send)
        self._wanted.set()
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()


class _Poke:
    """A wake-up that is not lost if it comes while nobody waits."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._event.wait()
        self._event = anyio.Event()


Send = Callable[[dict[str, Any] | None, str], Awaitable[None]]


class JobWatch:
    def __init__(
        self,
        project: Project,
        supabase_url: str,
        service_key: str,
        poll_seconds: float = 1.0,
        safety_seconds: float = 10.0,
    ) -> None:
        self._project = project
        self._url = re.sub(r"^http", "ws", supabase_url) + "/realtime/v1"
        self._key = service_key
        self._poll = poll_seconds
        self._safety = safety_seconds

    async def watch(self, table: str, job_id: int, send: Send) -> None:
        """Call `send(row, mode)` with the row now and after each change, until cancelled; `mode` is
        `realtime`, `polling` or `unreachable`. A row that is gone is None."""
        poke, mode = _Poke(), {"realtime": False}
        last: tuple[Any, str] | None = None
        listening: anyio.CancelScope | None = None
        async with anyio.create_task_group() as group:
            while True:
                try:
                    row = await self._project.job(table, job_id)
                    state = "realtime" if mode["realtime"] else "polling"
                except StoreError:
                    row, state = last[0] if last else None, "unreachable"
                active = row is not None and row["status"] not in FINAL
                if active and listening is None:
                    listening = anyio.CancelScope()
                    group.start_soon(self._listen, listening, table, job_id, poke, mode)
                elif not active and listening is not None:
                    listening.cancel()
                    listening, mode["realtime"] = None, False
                    state = "polling" if state == "realtime" else state
                if (row, state) != last:
                    await send(row, state)
                    last = (row, state)
                await poke.wait(self._safety if mode["realtime"] or not active else self._poll)

    async def _listen(
        self, scope: anyio.CancelScope, table: str, job_id: int, poke: _Poke, mode: dict[str, bool]
    ) -> None:
        failures = 0
        with scope:
            while True:
                await self._channel(table, job_id, poke, mode)
                mode["realtime"] = False
                poke.set()
                failures += 1
                await anyio.sleep(random.uniform(0, min(30.0, 0.5 * 2 ** min(failures, 6))))

    async def _channel(self, table: str, job_id: int, poke: _Poke, mode: dict[str, bool]) -> None:
        client = AsyncRealtimeClient(self._url, token=self._key, auto_reconnect=False, max_retries=1)
        broken = anyio.Event()

        def system(message: Any) -> None:
            if getattr(message, "message", "") == "Subscribed to PostgreSQL":
                mode["realtime"] = True
                poke.set()  # changes flow from here on: read the row once, so none is missed

        def subscribed(state: RealtimeSubscribeStates, error: Exception | None) -> None:
            if state != RealtimeSubscribeStates.SUBSCRIBED:
                logger.info(f"dashboard: Realtime channel for job {job_id}: {state.value} {error or ''}")
                broken.set()

        try:
            await client.connect()
            channel = client.channel(f"reactor-dashboard:{table}:{job_id}:{uuid.uuid4().hex[:8]}")
            channel.on_postgres_changes(
                "UPDATE", lambda _: poke.set(), table=table, schema="public", filter=f"id=eq.{job_id}"
            )
            channel.on_system(system)
            await channel.subscribe(subscribed)
            while client.is_connected and not broken.is_set():
                with anyio.move_on_after(0.5):
                    await broken.wait()
        except Exception as exc:
            logger.info(f"dashboard: Realtime unavailable for job {job_id}: {type(exc).__name__}: {exc}")
        finally:
            with anyio.move_on_after(2, shield=True):
                await client.close()
