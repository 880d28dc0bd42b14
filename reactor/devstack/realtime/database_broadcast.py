"""Broadcast from Database: the committed broadcasts of `realtime.messages`, in commit order.

messages.sql creates Realtime's schema objects and a trigger that sends each inserted broadcast
(`realtime.send`, `realtime.broadcast_changes`, or a plain insert with an event and a payload) with
pg_notify; this module installs them and listens on one dedicated connection, handing each
message to a callback. Notifications arrive only for committed transactions, so a rolled-back
`realtime.send` delivers nothing, as on Supabase. A dropped listener connection is reopened;
messages committed meanwhile are lost (delivery is at most once, like the replication slot's).
Rows older than Supabase's retention are swept now and then, as Realtime drops old partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import asyncpg
from loguru import logger

CHANNEL = "reactor_realtime_messages"
APPLICATION_NAME = "reactor_devstack_broadcast"
_RECONNECT_SECONDS = 0.5
_SWEEP_SECONDS = 600.0
_RETENTION = "3 days"  # Realtime's janitor keeps this many days of partitions


@dataclass(frozen=True)
class Message:
    id: str
    topic: str
    event: str
    private: bool
    payload: bytes  # the JSON text of the row's payload


def messages_sql() -> str:
    return files("reactor.devstack.realtime").joinpath("messages.sql").read_text()


async def install(pool: asyncpg.Pool) -> None:
    """Create the `realtime` schema's objects. Idempotent and safe to run concurrently."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(hashtext('reactor.devstack.bootstrap'))")
        await conn.execute(messages_sql())


def _message(raw: dict[str, Any]) -> Message | None:
    payload = raw.get("payload")
    if not isinstance(raw.get("topic"), str) or not isinstance(raw.get("event"), str) or payload is None:
        return None
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return Message(str(raw["id"]), raw["topic"], raw["event"], bool(raw.get("private")), text.encode())


class MessageFeed:
    """Listens for committed broadcasts and calls `on_message` with each, in commit order."""

    def __init__(self, pool: asyncpg.Pool, database_url: str, on_message: Callable[[Message], None]) -> None:
        self._pool = pool
        self._url = database_url
        self._on_message = on_message
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.reading = False  # listening now: a broadcast committed now will be delivered

    async def start(self) -> None:
        await install(self._pool)
        connected = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._run(connected))]
        await connected

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, connected: asyncio.Future[None]) -> None:
        while True:
            try:
                await self._listen(connected)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("realtime broadcast listener lost its connection: {}", exc)
            if not connected.done():
                connected.set_result(None)
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _listen(self, connected: asyncio.Future[None]) -> None:
        conn = await asyncpg.connect(self._url, server_settings={"application_name": APPLICATION_NAME})
        lost = asyncio.get_running_loop().create_future()
        conn.add_termination_listener(lambda _c: lost.done() or lost.set_result(None))
        try:
            await conn.add_listener(CHANNEL, lambda _c, _p, _ch, payload: self._pending.put_nowait(payload))
            self.reading = True
            if not connected.done():
                connected.set_result(None)
            while not lost.done():
                await asyncio.wait([lost], timeout=_SWEEP_SECONDS)
                if not lost.done():
                    await self._pool.execute(
                        f"delete from realtime.messages where inserted_at < now() - interval '{_RETENTION}'"
                    )
        finally:
            self.reading = False
            await conn.close()

    async def _read(self) -> None:
        """One at a time, so that a large message read back from its table keeps its place."""
        while True:
            text = await self._pending.get()
            try:
                raw = json.loads(text)
                if "big" in raw:
                    row = await self._pool.fetchrow(
                        "select id, topic, event, private, payload::text as payload"
                        " from realtime.messages where id = $1::uuid",
                        raw["big"],
                    )
                    raw = dict(row) if row is not None else {}
                message = _message(raw)
                if message is not None:
                    self._on_message(message)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("realtime: a large broadcast could not be read: {}", exc)
            except Exception:
                logger.exception("realtime: a broadcast from the database could not be delivered")
