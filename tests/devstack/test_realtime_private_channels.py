"""Private channels authorized by RLS on `realtime.messages`, with the unmodified supabase-py
client (and a raw Phoenix client where a missing reply must be seen): a member joins and
broadcasts, a member who may only read has its broadcasts dropped, a stranger's join is refused
with Realtime's words, service_role needs no policy, presence needs its own policy, and a new
token that lost the read shuts the channel."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from realtime import RealtimeSubscribeStates
from supabase import AsyncClient, acreate_client

from tests.support.realtime import client, close, connect, reply, system

pytestmark = pytest.mark.anyio

WAIT = 10.0  # a safety net, not a speed requirement

# Members of a topic may read it; only those with can_send may write to it.
POLICIES = """
    create table public.room_members (user_id uuid, topic text, can_send boolean not null default false);
    create policy members_read on realtime.messages for select to authenticated
      using (exists (select 1 from public.room_members m
                     where m.user_id = auth.uid() and m.topic = realtime.topic()));
    create policy senders_write on realtime.messages for insert to authenticated
      with check (realtime.messages.extension = 'broadcast' and exists (
        select 1 from public.room_members m
        where m.user_id = auth.uid() and m.topic = realtime.topic() and m.can_send));
"""


async def members(db: asyncpg.Connection, topic: str, **can_send: bool) -> dict[str, str]:
    """A user id per name, each a member of `topic` (sending as given); "eve" is no member."""
    ids = {name: str(uuid.uuid4()) for name in [*can_send, "eve"]}
    for name, sends in can_send.items():
        await db.execute("insert into public.room_members values ($1, $2, $3)", ids[name], topic, sends)
    return ids


async def private(sb: AsyncClient, name: str, config: dict[str, Any] | None = None):
    """Subscribe to a private channel: (channel, broadcasts seen, (state, error) of the join)."""
    channel = sb.channel(name, {"config": {"private": True, **(config or {})}})
    seen: asyncio.Queue[Any] = asyncio.Queue()
    channel.on_broadcast("wave", seen.put_nowait)
    states: asyncio.Queue[Any] = asyncio.Queue()
    await channel.subscribe(lambda state, error: states.put_nowait((state, error)))
    return channel, seen, await asyncio.wait_for(states.get(), WAIT)


async def test_members_join_and_broadcast_strangers_are_refused(devstack, db: asyncpg.Connection) -> None:
    await db.execute(POLICIES)
    ids = await members(db, "room:1", ada=True, bob=False)
    ada = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(ids["ada"]))
    bob = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(ids["bob"]))
    eve = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(ids["eve"]))
    ca, seen_a, (state, _) = await private(ada, "room:1", {"broadcast": {"self": True}})
    assert state == RealtimeSubscribeStates.SUBSCRIBED
    _, seen_b, (state, _) = await private(bob, "room:1")
    assert state == RealtimeSubscribeStates.SUBSCRIBED

    _, _, (state, error) = await private(eve, "room:1")
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "Unauthorized: You do not have permissions to read from this Channel topic: room:1" in str(error)
    # Anonymous: no policy names anon.
    anon = await acreate_client(devstack.url, devstack.keys.anon)
    _, _, (state, error) = await private(anon, "room:1")
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR and "Unauthorized" in str(error)

    # A member who may write reaches the others (and itself with `self`).
    await ca.send_broadcast("wave", {"n": 1})
    for seen in (seen_a, seen_b):
        assert (await asyncio.wait_for(seen.get(), WAIT))["payload"] == {"n": 1}

    # A member who may only read: its broadcast is dropped, with no reply even though it asked
    # for an ack. The heartbeat's reply, handled after it, proves it was handled.
    raw = await connect(devstack, devstack.keys.anon)
    ref = await raw.push(
        "realtime:room:1", "phx_join",
        {"config": {"private": True, "broadcast": {"ack": True}}, "access_token": devstack.keys.user_token(ids["bob"])},
        join_ref="j1",
    )  # fmt: skip
    assert await raw.recv() == reply("realtime:room:1", ref, "ok", {"postgres_changes": []})
    dropped = await raw.push(
        "realtime:room:1",
        "broadcast",
        {"type": "broadcast", "event": "wave", "payload": {"n": 2}},
        join_ref="j1",
    )
    beat = await raw.push("phoenix", "heartbeat", {})
    answer = await raw.recv()
    assert (answer["ref"], answer["topic"]) == (beat, "phoenix") and dropped != beat
    # So ada's next broadcast is the next anyone hears.
    await ca.send_broadcast("wave", {"n": 3})
    assert (await asyncio.wait_for(seen_b.get(), WAIT))["payload"] == {"n": 3}
    assert (await asyncio.wait_for(seen_a.get(), WAIT))["payload"] == {"n": 3}
    await raw.ws.close()
    for sb in (ada, bob, eve, anon):
        await sb.realtime.close()


async def test_service_role_needs_no_policy(devstack) -> None:
    sb = await acreate_client(devstack.url, devstack.keys.service_role)
    channel, seen, (state, _) = await private(sb, "ops", {"broadcast": {"self": True}})
    assert state == RealtimeSubscribeStates.SUBSCRIBED  # no policy at all: service_role bypasses RLS
    await channel.send_broadcast("wave", {"ok": True})
    assert (await asyncio.wait_for(seen.get(), WAIT))["payload"] == {"ok": True}
    await sb.realtime.close()


async def test_presence_on_a_private_channel_needs_its_own_policies(devstack, db: asyncpg.Connection) -> None:
    await db.execute(POLICIES)  # broadcast only: members may read every extension, write broadcast
    ids = await members(db, "room:2", ada=True)
    raw = await connect(devstack, devstack.keys.anon)
    token = devstack.keys.user_token(ids["ada"])
    config = {"private": True, "presence": {"enabled": True, "key": "ada"}}
    ref = await raw.push(
        "realtime:room:2", "phx_join", {"config": config, "access_token": token}, join_ref="j1"
    )
    frames = await raw.recv_until("presence_state")
    assert frames[0] == reply("realtime:room:2", ref, "ok", {"postgres_changes": []})
    track = await raw.push(
        "realtime:room:2",
        "presence",
        {"type": "presence", "event": "track", "payload": {"at": 1}},
        join_ref="j1",
    )
    assert await raw.recv() == reply("realtime:room:2", track, "error", {})
    await raw.ws.close()

    # With a policy that lets members write presence too, the track is accepted.
    await db.execute("""
        create policy members_track on realtime.messages for insert to authenticated
          with check (realtime.messages.extension = 'presence' and exists (
            select 1 from public.room_members m where m.user_id = auth.uid() and m.topic = realtime.topic()))
    """)
    raw = await connect(devstack, devstack.keys.anon)
    await raw.push("realtime:room:2", "phx_join", {"config": config, "access_token": token}, join_ref="j1")
    await raw.recv_until("presence_state")
    track = await raw.push(
        "realtime:room:2",
        "presence",
        {"type": "presence", "event": "track", "payload": {"at": 1}},
        join_ref="j1",
    )
    frames = [await raw.recv(), await raw.recv()]  # the diff (presence is readable) and the reply
    assert reply("realtime:room:2", track, "ok", {}) in frames
    assert any(f["event"] == "presence_diff" and "ada" in f["payload"]["joins"] for f in frames)
    await raw.ws.close()


async def test_a_new_token_that_lost_the_read_shuts_the_channel(devstack, db: asyncpg.Connection) -> None:
    await db.execute(POLICIES)
    ids = await members(db, "room:3", ada=False)
    raw = await connect(devstack, devstack.keys.anon)
    ref = await raw.push(
        "realtime:room:3", "phx_join",
        {"config": {"private": True}, "access_token": devstack.keys.user_token(ids["ada"])}, join_ref="j1",
    )  # fmt: skip
    assert (await raw.recv())["payload"]["status"] == "ok" and ref
    await raw.push(
        "realtime:room:3",
        "access_token",
        {"access_token": devstack.keys.user_token(ids["eve"])},
        join_ref="j1",
    )
    message = "You do not have permissions to read from this Channel topic: room:3"
    assert await raw.recv() == system("room:3", "error", message, extension="system")
    assert await raw.recv() == close("realtime:room:3", "j1")
    await raw.ws.close()
