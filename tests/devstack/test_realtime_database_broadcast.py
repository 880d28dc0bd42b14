"""Broadcast from Database with the unmodified supabase-py client: `realtime.send` and
`realtime.broadcast_changes` reach a topic's subscribers after the writer commits, with the stored
message's id in the payload and as `meta.id`; a rolled-back send delivers nothing; a private
message reaches only authorized private subscribers; a send whose insert RLS refuses is a
warning, never the writer's error, and delivers nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from realtime import RealtimeSubscribeStates
from supabase import AsyncClient, acreate_client

from tests.support.realtime import client

pytestmark = pytest.mark.anyio

WAIT = 10.0  # a safety net, not a speed requirement


async def listening(sb: AsyncClient, name: str, event: str, private: bool = False) -> asyncio.Queue[Any]:
    channel = sb.channel(name, {"config": {"private": private}})
    seen: asyncio.Queue[Any] = asyncio.Queue()
    channel.on_broadcast(event, seen.put_nowait)
    states: asyncio.Queue[Any] = asyncio.Queue()
    await channel.subscribe(lambda state, error: states.put_nowait(state))
    assert await asyncio.wait_for(states.get(), WAIT) == RealtimeSubscribeStates.SUBSCRIBED
    return seen


class Rollback(Exception):
    pass


async def test_send_delivers_after_commit_never_after_rollback(devstack, db: asyncpg.Connection) -> None:
    sb = await acreate_client(devstack.url, devstack.keys.anon)
    seen = await listening(sb, "news", "headline")
    with pytest.raises(Rollback):
        async with db.transaction():
            await db.execute("""select realtime.send('{"n": 1}', 'headline', 'news', false)""")
            raise Rollback
    async with db.transaction():
        await db.execute("""select realtime.send('{"n": 2}', 'headline', 'news', false)""")
        await asyncio.sleep(0.2)
        assert seen.empty()  # not before the commit
    message = await asyncio.wait_for(seen.get(), WAIT)
    assert (message["event"], message["payload"]["n"]) == ("headline", 2)  # n=1 never came
    stored = await db.fetchrow("select id, payload, private from realtime.messages where event = 'headline'")
    assert message["payload"] == {"n": 2, "id": str(stored["id"])}  # the row's payload: id added
    assert message["meta"] == {"id": str(stored["id"])}
    # A payload that names its own id keeps it; a large payload arrives whole.
    big = "x" * 20_000
    await db.execute(
        "select realtime.send($1::jsonb, 'headline', 'news', false)", f'{{"id": 7, "big": "{big}"}}'
    )
    message = await asyncio.wait_for(seen.get(), WAIT)
    assert message["payload"] == {"id": 7, "big": big} and uuid.UUID(message["meta"]["id"])
    await sb.realtime.close()


async def test_broadcast_changes_from_a_trigger_reaches_authorized_private_subscribers(
    devstack, db: asyncpg.Connection
) -> None:
    await db.execute("""
        create table public.notes (id int primary key, body text);
        create function public.notes_broadcast() returns trigger language plpgsql security definer as $$
        begin
          perform realtime.broadcast_changes('notes', tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
          return null;
        end $$;
        create trigger notes_broadcast after insert or update or delete on public.notes
          for each row execute function public.notes_broadcast();
        create policy note_readers on realtime.messages for select to authenticated
          using (realtime.topic() = 'notes' and (auth.jwt() ->> 'team') = 'notes');
    """)
    reader = await client(
        devstack.url, devstack.keys.anon, devstack.keys.user_token(str(uuid.uuid4()), team="notes")
    )
    seen = await listening(reader, "notes", "*", private=True)
    public = await acreate_client(devstack.url, devstack.keys.anon)
    seen_public = await listening(public, "notes", "*")  # same name, public: never a private message

    await db.execute("insert into public.notes values (1, 'hello')")
    await db.execute("update public.notes set body = 'bye' where id = 1")
    await db.execute("delete from public.notes where id = 1")
    got = [await asyncio.wait_for(seen.get(), WAIT) for _ in range(3)]
    assert [m["event"] for m in got] == ["INSERT", "UPDATE", "DELETE"]
    inserted, updated, deleted = (m["payload"] for m in got)
    assert {k: inserted[k] for k in ("operation", "schema", "table", "record", "old_record")} == {
        "operation": "INSERT", "schema": "public", "table": "notes",
        "record": {"id": 1, "body": "hello"}, "old_record": None,
    }  # fmt: skip
    assert (updated["record"], updated["old_record"]) == (
        {"id": 1, "body": "bye"},
        {"id": 1, "body": "hello"},
    )
    assert (deleted["record"], deleted["old_record"]) == (None, {"id": 1, "body": "bye"})
    assert all(m["meta"]["id"] == m["payload"]["id"] for m in got)
    assert seen_public.empty()
    await reader.realtime.close()
    await public.realtime.close()


async def test_a_send_rls_refuses_warns_and_delivers_nothing(devstack, db: asyncpg.Connection) -> None:
    sb = await acreate_client(devstack.url, devstack.keys.service_role)
    seen = await listening(sb, "audit", "entry", private=True)
    # As an authenticated user with no insert policy: the writer's transaction goes on.
    async with db.transaction():
        await db.execute("set local role authenticated")
        await db.execute("""select realtime.send('{"who": "eve"}', 'entry', 'audit')""")
    await db.execute("""select realtime.send('{"who": "owner"}', 'entry', 'audit')""")
    assert (await asyncio.wait_for(seen.get(), WAIT))["payload"]["who"] == "owner"
    assert await db.fetchval("select count(*) from realtime.messages where topic = 'audit'") == 1
    await sb.realtime.close()
