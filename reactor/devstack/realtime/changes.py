"""Change capture: committed row changes of the `supabase_realtime` publication, as they commit.

changes.sql puts statement-level triggers on every table of the publication that send each change
with pg_notify; this module installs them, keeps the triggers in step with the publication and listens
on one dedicated connection, handing each change to a callback in commit order. A dropped
listener connection is reopened; changes committed meanwhile are lost, as they are when
Supabase's replication poller restarts (delivery is at most once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import asyncpg
from loguru import logger

CHANNEL = "reactor_realtime"
APPLICATION_NAME = "reactor_devstack_realtime"  # marks the listener's connection in pg_stat_activity
_SYNC_SECONDS = 2.0
_RECONNECT_SECONDS = 0.5


@dataclass(frozen=True)
class Change:
    schema: str
    table: str
    relid: int
    type: str  # INSERT, UPDATE or DELETE
    commit_timestamp: str
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    size: int  # bytes of the change's JSON, for Realtime's 1 MiB record limit


def _change(text: str) -> Change:
    raw = json.loads(text)
    return Change(
        schema=raw["schema"],
        table=raw["table"],
        relid=raw["relid"],
        type=raw["type"],
        commit_timestamp=raw["commit_timestamp"],
        record=raw["record"],
        old_record=raw["old_record"],
        size=len(text.encode()),
    )


async def install(pool: asyncpg.Pool) -> None:
    """Install the capture functions and triggers. Idempotent and safe to run concurrently."""
    sql = files("reactor.devstack.realtime").joinpath("changes.sql").read_text()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(hashtext('reactor.devstack.changes'))")
        await conn.execute(sql)
        await conn.execute("select _realtime.sync_triggers()")


async def sync(pool: asyncpg.Pool) -> None:
    """Bring the triggers in step with the publication (a table was added or removed)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(hashtext('reactor.devstack.changes'))")
        await conn.execute("select _realtime.sync_triggers()")


async def want(pool: asyncpg.Pool, gateway: int, bindings: list[dict[str, Any]]) -> None:
    """Make `bindings` (relid, event and one filter condition's col, op and value, or None) the
    changes gateway `gateway` wants captured, replacing what it wanted before (changes.sql)."""
    await pool.execute("select _realtime.want($1, $2::jsonb)", gateway, json.dumps(bindings))


class ChangeFeed:
    """Listens for changes and calls `on_change` with each, in commit order."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        on_change: Callable[[Change], None],
        on_sync: Callable[[], Awaitable[None]],
    ) -> None:
        self._pool = pool
        self._url = database_url
        self._on_change = on_change
        self._on_sync = on_sync  # after each periodic sync: catalog facts may have changed
        self._task: asyncio.Task[None] | None = None
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._backlog = 0  # notifications queued or being read behind a big change
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await install(self._pool)
        connected = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_big_changes())
        self._task = asyncio.create_task(self._run(connected))
        await connected

    async def stop(self) -> None:
        for task in (self._task, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self, connected: asyncio.Future[None]) -> None:
        while True:
            try:
                await self._listen(connected)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("realtime change listener lost its connection: {}", exc)
            if not connected.done():
                connected.set_result(None)
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _listen(self, connected: asyncio.Future[None]) -> None:
        conn = await asyncpg.connect(self._url, server_settings={"application_name": APPLICATION_NAME})
        lost = asyncio.get_running_loop().create_future()
        conn.add_termination_listener(lambda _c: lost.done() or lost.set_result(None))
        try:
            await conn.add_listener(CHANNEL, self._notified)
            if not connected.done():
                connected.set_result(None)
            while not lost.done():
                await asyncio.wait([lost], timeout=_SYNC_SECONDS)
                if not lost.done():
                    await sync(self._pool)
                    await self._sweep()
                    await self._on_sync()
        finally:
            await conn.close()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if self._backlog or payload.startswith('{"big"'):
            # A big change must be read from its table first; later ones queue behind it to
            # keep commit order.
            self._backlog += 1
            self._pending.put_nowait(payload)
        else:
            self._on_change(_change(payload))

    async def _read_big_changes(self) -> None:
        while True:
            payload = await self._pending.get()
            try:
                if payload.startswith('{"big"'):
                    payload = await self._pool.fetchval(
                        "delete from _realtime.big_changes where id = $1 returning change",
                        json.loads(payload)["big"],
                    )
                if payload is not None:
                    self._on_change(_change(payload))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("realtime: a large change could not be read: {}", exc)
            finally:
                self._backlog -= 1

    async def _sweep(self) -> None:
        await self._pool.execute(
            "delete from _realtime.big_changes where created_at < now() - interval '1 minute'"
        )
