"""Helpers for the Realtime tests: a supabase-py channel that records what it receives, and a
raw Phoenix client for what the official client hides.

Absence is proven by order, never by waiting: changes arrive in commit order, so when a later
change arrives first, an earlier one was not sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import asyncpg
import websockets
from realtime import AsyncRealtimeChannel, RealtimeSubscribeStates
from supabase import AsyncClient, acreate_client

SAFETY_TIMEOUT = 10.0  # a safety net, not a speed requirement


class Feed:
    """What one channel's callbacks received, in order."""

    def __init__(self, channel: AsyncRealtimeChannel) -> None:
        self.channel = channel
        self.changes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.system: asyncio.Queue[Any] = asyncio.Queue()
        self.states: asyncio.Queue[tuple[RealtimeSubscribeStates, Exception | None]] = asyncio.Queue()

    async def next_change(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.changes.get(), SAFETY_TIMEOUT)

    async def next_system(self) -> Any:
        return await asyncio.wait_for(self.system.get(), SAFETY_TIMEOUT)

    async def next_state(self) -> tuple[RealtimeSubscribeStates, Exception | None]:
        return await asyncio.wait_for(self.states.get(), SAFETY_TIMEOUT)

    async def live(self) -> None:
        """Wait for "Subscribed to PostgreSQL", after which changes are delivered."""
        message = await self.next_system()
        assert (message.status, message.message) == ("ok", "Subscribed to PostgreSQL")


async def client(url: str, key: str, user_token: str | None = None) -> AsyncClient:
    sb = await acreate_client(url, key)
    if user_token is not None:
        await sb.realtime.set_auth(user_token)
    return sb


async def subscribe(sb: AsyncClient, name: str, *bindings: dict[str, Any], live: bool = True) -> Feed:
    """Join `realtime:<name>` with postgres_changes `bindings` (event, table, filter, ...)."""
    channel = sb.channel(name)
    feed = Feed(channel)
    for binding in bindings:
        params = dict(binding)
        event = params.pop("event")
        channel.on_postgres_changes(event, feed.changes.put_nowait, **params)
    channel.on_system(feed.system.put_nowait)
    await channel.subscribe(lambda state, error: feed.states.put_nowait((state, error)))
    assert (await feed.next_state())[0] == RealtimeSubscribeStates.SUBSCRIBED
    if live:
        await feed.live()
    return feed


async def insert_job(
    db: asyncpg.Connection,
    job_type: str,
    *,
    priority: int = 0,
    user_id: str | None = None,
    payload: Any = None,
) -> int:
    """Insert a job as the table owner (no RLS), committed at once; returns its id."""
    return await db.fetchval(
        "insert into public.jobs (job_type, priority, user_id, payload) values ($1, $2, $3, $4::jsonb) "
        "returning id",
        job_type,
        priority,
        user_id,
        json.dumps(payload if payload is not None else {}),
    )


def websocket_url(url: str, key: str, vsn: str | None = "1.0.0") -> str:
    query = urlencode({"apikey": key, **({"vsn": vsn} if vsn else {})})
    return f"{url.replace('http', 'ws', 1)}/realtime/v1/websocket?{query}"


JOBS = {"event": "INSERT", "schema": "public", "table": "jobs"}
SUBSCRIBED = "Subscribed to PostgreSQL"


class Raw:
    """A V1 (or V2) Phoenix client with nothing hidden: frames in, frames out."""

    def __init__(self, ws: websockets.ClientConnection, vsn: str) -> None:
        self.ws, self.vsn, self.ref = ws, vsn, 0

    async def push(self, topic: str, event: str, payload: Any, join_ref: str | None = None) -> str:
        self.ref += 1
        ref = str(self.ref)
        if self.vsn == "2.0.0":
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            frame = {"event": event, "payload": payload, "topic": topic, "ref": ref, "join_ref": join_ref}
            await self.ws.send(json.dumps(frame))
        return ref

    async def join(self, name: str, *bindings: dict[str, Any], token: str | None = None) -> str:
        config = {"broadcast": {"ack": False, "self": False}, "presence": {"key": "", "enabled": False},
                  "private": False, "postgres_changes": list(bindings)}  # fmt: skip
        payload: dict[str, Any] = {"config": config}
        if token is not None:
            payload["access_token"] = token
        return await self.push(f"realtime:{name}", "phx_join", payload, join_ref=str(self.ref + 1))

    async def recv(self) -> Any:
        return json.loads(await asyncio.wait_for(self.ws.recv(), SAFETY_TIMEOUT))

    async def recv_until(self, event: str) -> list[Any]:
        frames = [await self.recv()]
        while (frames[-1][3] if self.vsn == "2.0.0" else frames[-1]["event"]) != event:
            frames.append(await self.recv())
        return frames


async def connect(devstack, key: str | None = None, vsn: str = "1.0.0") -> Raw:
    ws = await websockets.connect(websocket_url(devstack.url, key or devstack.keys.service_role, vsn))
    return Raw(ws, vsn)


def reply(topic: str, ref: str | None, status: str, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "phx_reply",
        "payload": {"status": status, "response": response},
        "ref": ref,
        "topic": topic,
    }


def close(topic: str, join_ref: str) -> dict[str, Any]:
    return {"event": "phx_close", "payload": {}, "ref": join_ref, "topic": topic}


def system(name: str, status: str, message: str, extension: str = "postgres_changes") -> dict[str, Any]:
    payload = {"channel": name, "extension": extension, "message": message, "status": status}
    return {"event": "system", "payload": payload, "ref": None, "topic": f"realtime:{name}"}
