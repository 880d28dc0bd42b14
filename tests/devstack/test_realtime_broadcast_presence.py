"""Broadcast and Presence on the local stack's Realtime, with the unmodified supabase-py client:
broadcasts reach the topic's other subscribers (and the sender with `self`), never a private
channel of the same name; track, update and untrack reach every subscriber as presence diffs, and
a later join gets the state."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from realtime import RealtimeSubscribeStates
from supabase import AsyncClient, acreate_client

pytestmark = pytest.mark.anyio

WAIT = 10.0  # a safety net, not a speed requirement


async def joined(sb: AsyncClient, name: str, config: dict[str, Any], **on: Any):
    channel = sb.channel(name, {"config": config})
    seen: asyncio.Queue[Any] = asyncio.Queue()
    channel.on_broadcast("wave", seen.put_nowait)
    if on.get("presence"):
        channel.on_presence_sync(lambda: seen.put_nowait(("sync", channel.presence_state())))
    states: asyncio.Queue[Any] = asyncio.Queue()
    await channel.subscribe(lambda state, error: states.put_nowait(state))
    assert await asyncio.wait_for(states.get(), WAIT) == RealtimeSubscribeStates.SUBSCRIBED
    return channel, seen


async def test_broadcast_reaches_others_and_self_only_when_asked(devstack, db) -> None:
    # The private channel of the same name may be joined (RLS lets anon read it), and stays apart.
    await db.execute(
        "create policy anon_reads_room on realtime.messages for select to anon using (realtime.topic() = 'room')"
    )
    a = await acreate_client(devstack.url, devstack.keys.anon)
    b = await acreate_client(devstack.url, devstack.keys.anon)
    ca, seen_a = await joined(a, "room", {"broadcast": {"self": True, "ack": True}})
    cb, seen_b = await joined(b, "room", {"broadcast": {"self": False}})
    c = await acreate_client(devstack.url, devstack.keys.anon)
    _, seen_private = await joined(c, "room", {"private": True})  # same name, private: apart
    await ca.send_broadcast("wave", {"n": 1})
    for seen in (seen_a, seen_b):
        message = await asyncio.wait_for(seen.get(), WAIT)
        assert (message["event"], message["payload"]) == ("wave", {"n": 1})
    await cb.send_broadcast("wave", {"n": 2})
    await ca.send_broadcast("wave", {"n": 3})
    assert [(await asyncio.wait_for(seen_a.get(), WAIT))["payload"]["n"] for _ in range(2)] == [2, 3]
    # b does not hear its own n=2: its next is a's n=3.
    assert (await asyncio.wait_for(seen_b.get(), WAIT))["payload"] == {"n": 3}
    assert seen_private.empty()
    await c.realtime.close()
    await a.realtime.close()
    await b.realtime.close()


async def test_presence_track_update_untrack_and_state(devstack) -> None:
    a = await acreate_client(devstack.url, devstack.keys.anon)
    b = await acreate_client(devstack.url, devstack.keys.anon)
    ca, _ = await joined(a, "lobby", {"presence": {"key": "ada"}}, presence=True)
    cb, seen_b = await joined(b, "lobby", {"presence": {"key": "bob"}}, presence=True)

    async def synced(predicate) -> dict[str, Any]:
        while True:
            kind, state = await asyncio.wait_for(seen_b.get(), WAIT)
            if kind == "sync" and predicate(state):
                return state

    await ca.track({"status": "online"})
    state = await synced(lambda s: "ada" in s)
    assert [{k: v for k, v in m.items() if k != "presence_ref"} for m in state["ada"]] == [
        {"status": "online"}
    ]
    await ca.track({"status": "away"})
    state = await synced(lambda s: "ada" in s and s["ada"][0].get("status") == "away")
    assert len(state["ada"]) == 1
    await cb.track({"status": "here"})
    await synced(lambda s: "bob" in s)
    await ca.untrack()
    state = await synced(lambda s: "ada" not in s)
    assert list(state) == ["bob"]
    # A later join gets the state; a socket that goes away leaves.
    c = await acreate_client(devstack.url, devstack.keys.anon)
    _, seen_c = await joined(c, "lobby", {"presence": {"key": "cy"}}, presence=True)
    kind, state = await asyncio.wait_for(seen_c.get(), WAIT)
    assert (kind, list(state)) == ("sync", ["bob"])
    await b.realtime.close()
    while True:
        kind, state = await asyncio.wait_for(seen_c.get(), WAIT)
        if state == {}:
            break
    await a.realtime.close()
    await c.realtime.close()
