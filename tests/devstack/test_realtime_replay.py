"""Broadcast replay with the unmodified supabase-py client (and a raw Phoenix client for the
framing): a private channel joined with `config.broadcast.replay = {since, limit}` gets the
topic's stored private broadcasts right after its join, oldest first, marked `meta.replayed`,
and only it; `since` filters, `limit` keeps the most recent (at most 25, at least 1); a user who
may not read the topic's broadcasts gets none; a public channel, or a bad `since` or `limit`, is
refused with Supabase Realtime's words."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from realtime import RealtimeSubscribeStates
from supabase import AsyncClient, acreate_client

from tests.support.realtime import client, connect, reply

pytestmark = pytest.mark.anyio

WAIT = 10.0  # a safety net, not a speed requirement

# Members of a topic may read it; presence-only members may read its presence, not its broadcasts.
POLICIES = """
    create table public.room_members (user_id uuid, topic text, presence_only boolean not null default false);
    create policy members_read on realtime.messages for select to authenticated
      using (exists (select 1 from public.room_members m
                     where m.user_id = auth.uid() and m.topic = realtime.topic()
                       and (not m.presence_only or realtime.messages.extension = 'presence')));
"""


async def member(db: asyncpg.Connection, topic: str, presence_only: bool = False) -> str:
    user_id = str(uuid.uuid4())
    await db.execute("insert into public.room_members values ($1, $2, $3)", user_id, topic, presence_only)
    return user_id


async def join(sb: AsyncClient, name: str, config: dict[str, Any]):
    """Join with `config`; (channel, every broadcast seen, (state, error) of the join)."""
    channel = sb.channel(name, {"config": config})
    seen: asyncio.Queue[Any] = asyncio.Queue()
    channel.on_broadcast("*", seen.put_nowait)
    states: asyncio.Queue[Any] = asyncio.Queue()
    await channel.subscribe(lambda state, error: states.put_nowait((state, error)))
    return channel, seen, await asyncio.wait_for(states.get(), WAIT)


def replaying(since: int = 0, **limit: Any) -> dict[str, Any]:
    return {"private": True, "broadcast": {"replay": {"since": since, **limit}}}


async def send(db: asyncpg.Connection, n: int, topic: str = "room:r", private: bool = True) -> str:
    """realtime.send of {"n": n} as event "note"; the stored message's id."""
    await db.execute(
        "select realtime.send(jsonb_build_object('n', $1::int), 'note', $2, $3)", n, topic, private
    )
    return await db.fetchval(
        "select id::text from realtime.messages where topic = $1 and payload ->> 'n' = $2 and private = $3",
        topic,
        str(n),
        private,
    )


async def test_stored_messages_are_replayed_on_join_only_when_asked(devstack, db: asyncpg.Connection) -> None:
    await db.execute(POLICIES)
    ada = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(await member(db, "room:r")))
    bob = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(await member(db, "room:r")))
    ids = [await send(db, n) for n in (1, 2, 3)]
    await send(db, 90, private=False)  # a public message of the same name: never replayed
    await send(db, 91, topic="room:other")  # another topic's

    # bob joins first without replay, then ada with it: the replay is ada's alone.
    _, seen_bob, (state, _) = await join(bob, "room:r", {"private": True})
    assert state == RealtimeSubscribeStates.SUBSCRIBED
    _, seen_ada, (state, _) = await join(ada, "room:r", replaying())
    assert state == RealtimeSubscribeStates.SUBSCRIBED
    got = [await asyncio.wait_for(seen_ada.get(), WAIT) for _ in ids]
    assert got == [  # supabase-py hands over event, payload and meta
        {
            "event": "note",
            "payload": {"n": n, "id": id_},
            "meta": {"replayed": True, "id": id_},
        }
        for n, id_ in zip((1, 2, 3), ids, strict=True)
    ]
    # A live message afterwards comes unmarked, to both; for bob it is the first (nothing replayed).
    live = await send(db, 4)
    for seen in (seen_ada, seen_bob):
        message = await asyncio.wait_for(seen.get(), WAIT)
        assert (message["payload"], message["meta"]) == ({"n": 4, "id": live}, {"id": live})
    await ada.realtime.close()
    await bob.realtime.close()


async def test_since_filters_and_limit_keeps_the_most_recent(devstack, db: asyncpg.Connection) -> None:
    await db.execute(POLICIES)
    token = devstack.keys.user_token(await member(db, "room:t"))
    # 30 stored messages a second apart, the newest a minute ago.
    await db.execute("""
        insert into realtime.messages (topic, extension, event, payload, private, inserted_at)
        select 'room:t', 'broadcast', 'tick', jsonb_build_object('n', n), true,
               date_trunc('second', now()::timestamp) - interval '90 seconds' + n * interval '1 second'
        from generate_series(0, 29) n
    """)
    since_10 = await db.fetchval(
        "select (extract(epoch from inserted_at::timestamptz) * 1000)::bigint from realtime.messages"
        " where topic = 'room:t' and payload ->> 'n' = '10'"
    )

    async def replayed(config: dict[str, Any]) -> list[int]:
        sb = await client(devstack.url, devstack.keys.anon, token)
        _, seen, (state, _) = await join(sb, "room:t", config)
        assert state == RealtimeSubscribeStates.SUBSCRIBED
        await db.execute("select realtime.send('{\"n\": -1}', 'tick', 'room:t')")  # ends the replay
        got = [await asyncio.wait_for(seen.get(), WAIT)]
        while got[-1]["meta"].get("replayed"):
            got.append(await asyncio.wait_for(seen.get(), WAIT))
        await sb.realtime.close()
        assert all(m["meta"]["replayed"] is True for m in got[:-1]) and "replayed" not in got[-1]["meta"]
        return [m["payload"]["n"] for m in got[:-1]]

    assert await replayed(replaying(since_10, limit=5)) == [25, 26, 27, 28, 29]  # the newest five
    # Each call's closing live message (-1) is stored too, and replayed by the later ones.
    assert await replayed(replaying(since_10 + 14_000, limit=25)) == [24, 25, 26, 27, 28, 29, -1]
    assert await replayed(replaying(since_10, limit=25)) == [*range(10, 30), -1, -1]  # since included
    # No limit is 25; more than 25 is 25; less than 1 is 1.
    assert await replayed(replaying(since_10 + 15_000)) == [25, 26, 27, 28, 29, -1, -1, -1]
    assert await replayed(replaying(0, limit=100)) == [*range(9, 30), -1, -1, -1, -1]
    assert await replayed(replaying(0, limit=0)) == [-1]
    # Messages from the future (a clock ahead) are left out past a minute from now.
    await db.execute("""
        insert into realtime.messages (topic, extension, event, payload, private, inserted_at)
        values ('room:t', 'broadcast', 'tick', '{"n": 99}', true, now()::timestamp + interval '2 minutes')
    """)
    assert await replayed(replaying(0, limit=1)) == [-1]


async def test_users_who_may_not_read_broadcasts_get_no_replay(devstack, db: asyncpg.Connection) -> None:
    await db.execute(POLICIES)
    await send(db, 1, topic="room:s")
    eve = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(str(uuid.uuid4())))
    _, seen, (state, error) = await join(eve, "room:s", replaying())
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "Unauthorized: You do not have permissions to read from this Channel topic: room:s" in str(error)
    # May read the topic's presence but not its broadcasts: joins, but not when it asks for a replay.
    watcher = await member(db, "room:s", presence_only=True)
    sb = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(watcher))
    presence = {"presence": {"enabled": True, "key": "w"}}
    _, _, (state, _) = await join(sb, "room:s", {"private": True, **presence})
    assert state == RealtimeSubscribeStates.SUBSCRIBED
    sb2 = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(watcher))
    _, seen, (state, error) = await join(sb2, "room:s", {**replaying(), **presence})
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "Unauthorized: You do not have permissions to read from this Channel topic: room:s" in str(error)
    assert seen.empty()
    for each in (eve, sb, sb2):
        await each.realtime.close()


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            {"private": False, "broadcast": {"replay": {"since": 0}}},
            "UnableToReplayMessages: Replay is not allowed for public channels",
        ),
        (
            {"broadcast": {"replay": None}},
            "UnableToReplayMessages: Replay is not allowed for public channels",
        ),
        (replaying("yesterday"), "UnableToReplayMessages: Replay params are not valid"),
        (replaying(1.5), "UnableToReplayMessages: Replay params are not valid"),
        (replaying(0, limit="5"), "UnableToReplayMessages: Replay params are not valid"),
        (replaying(10**20), "UnableToReplayMessages: Replay params are not valid"),
        (
            {"private": True, "broadcast": {"replay": {"limit": 5}}},
            "UnableToReplayMessages: Replay params are not valid",
        ),
    ],
)
async def test_public_channels_and_bad_params_are_refused(
    devstack, db: asyncpg.Connection, config: dict[str, Any], reason: str
) -> None:
    sb = await acreate_client(devstack.url, devstack.keys.service_role)
    _, _, (state, error) = await join(sb, "room:p", config)
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR and reason in str(error)
    await sb.realtime.close()


async def test_replay_framing_follows_the_join_reply(devstack, db: asyncpg.Connection) -> None:
    """V1 and V2: each replayed message is a `broadcast` push on the joined topic with the join's
    ref, between the join's reply and presence_state; a `replay` that is no object asks nothing."""
    stored = await send(db, 7, topic="room:f")
    message = {"payload": {"n": 7, "id": stored}, "event": "note", "type": "broadcast",
               "meta": {"replayed": True, "id": stored}}  # fmt: skip
    config = {**replaying(), "presence": {"enabled": True, "key": "k"}}

    v1 = await connect(devstack)
    ref = await v1.push("realtime:room:f", "phx_join", {"config": config}, join_ref="j1")
    assert await v1.recv_until("presence_state") == [
        reply("realtime:room:f", ref, "ok", {"postgres_changes": []}),
        {"event": "broadcast", "payload": message, "ref": None, "topic": "realtime:room:f"},
        {"event": "presence_state", "payload": {}, "ref": None, "topic": "realtime:room:f"},
    ]
    await v1.ws.close()

    v2 = await connect(devstack, vsn="2.0.0")
    ref = await v2.push("realtime:room:f", "phx_join", {"config": config}, join_ref="j1")
    assert await v2.recv_until("presence_state") == [
        ["j1", ref, "realtime:room:f", "phx_reply", {"status": "ok", "response": {"postgres_changes": []}}],
        ["j1", None, "realtime:room:f", "broadcast", message],
        ["j1", None, "realtime:room:f", "presence_state", {}],
    ]
    not_an_object = {"private": True, "broadcast": {"replay": True}, "presence": {"enabled": True}}
    ref = await v2.push("realtime:room:g", "phx_join", {"config": not_an_object}, join_ref="j2")
    frames = await v2.recv_until("presence_state")
    assert [f[3] for f in frames] == ["phx_reply", "presence_state"]
    await v2.ws.close()
