"""What the local stack captures for Realtime: only changes some live subscription could receive.

The capture triggers consult `_realtime.wanted`, which the gateway fills before it says
"Subscribed to PostgreSQL"; these tests listen on the trigger's own notification channel to see
what it sends, and check the wire details that come with it.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import anyio
import asyncpg
import pytest

from reactor.devstack.realtime import changes
from tests.support.realtime import JOBS, SUBSCRIBED, connect, insert_job, system

pytestmark = pytest.mark.anyio
SETTLE = "reactor_test_settle"


class Captured:
    """Notifications of the capture triggers, as (type, id) pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.marks: set[str] = set()

    def settled(self, _conn, _pid, _channel, payload: str) -> None:
        self.marks.add(payload)

    def __call__(self, _conn, _pid, _channel, payload: str) -> None:
        change = json.loads(payload)
        self.seen.append((change["type"], (change["record"] or change["old_record"])["id"]))


async def listening(database_url: str) -> tuple[asyncpg.Connection, Captured]:
    conn = await asyncpg.connect(database_url)
    captured = Captured()
    await conn.add_listener(changes.CHANNEL, captured)
    await conn.add_listener(SETTLE, captured.settled)
    return conn, captured


async def settle(db: asyncpg.Connection, captured: Captured) -> None:
    """Commit a notification of our own and wait for it: Postgres delivers a session's
    notifications in commit order, so every capture committed before it has arrived too."""
    token = uuid.uuid4().hex
    await db.execute("select pg_notify($1, $2)", SETTLE, token)
    with anyio.fail_after(10):
        while token not in captured.marks:
            await asyncio.sleep(0.01)


async def test_a_table_nobody_subscribes_to_is_not_captured(devstack, db, database_url) -> None:
    conn, captured = await listening(database_url)
    try:
        job = await insert_job(db, "quiet")
        await db.execute("update public.jobs set priority = 1 where id = $1", job)
        await settle(db, captured)
        assert captured.seen == []
    finally:
        await conn.close()


async def test_only_changes_a_filter_can_match_are_captured_and_each_is_delivered(
    devstack, db, database_url
) -> None:
    raw = await connect(devstack)
    await raw.join(
        "pending", {"event": "UPDATE", "schema": "public", "table": "jobs", "filter": "status=eq.pending"}
    )
    await raw.recv()  # the join reply
    assert await raw.recv() == system("pending", "ok", SUBSCRIBED)
    conn, captured = await listening(database_url)
    try:
        job = await insert_job(db, "t")  # INSERT: nobody asked
        await db.execute("update public.jobs set status = 'processing' where id = $1", job)  # no match
        await db.execute("update public.jobs set status = 'pending' where id = $1", job)  # match
        await settle(db, captured)
        assert captured.seen == [("UPDATE", job)]
        frame = await raw.recv()
        assert frame["event"] == "postgres_changes"
        assert frame["payload"]["data"]["record"]["status"] == "pending"
    finally:
        await conn.close()


async def test_a_channel_that_left_stops_the_capture_within_a_sync(devstack, db, database_url) -> None:
    raw = await connect(devstack)
    ref = await raw.join("inserts", JOBS)
    await raw.recv()
    assert await raw.recv() == system("inserts", "ok", SUBSCRIBED)
    assert await db.fetchval("select count(*) from _realtime.wanted where event = 'INSERT'") == 1
    await raw.push("realtime:inserts", "phx_leave", {}, join_ref=ref)
    for _ in range(50):  # the gateway rewrites its rows every 2 s
        if not await db.fetchval("select count(*) from _realtime.wanted"):
            break
        await asyncio.sleep(0.1)
    assert await db.fetchval("select count(*) from _realtime.wanted") == 0


async def test_a_socket_that_closed_stops_the_capture_at_once(devstack, db) -> None:
    raw = await connect(devstack)
    await raw.join("inserts", JOBS)
    await raw.recv()
    assert await raw.recv() == system("inserts", "ok", SUBSCRIBED)
    assert await db.fetchval("select count(*) from _realtime.wanted") == 1
    await raw.ws.close()
    for _ in range(10):  # well inside the 2 s between syncs
        if not await db.fetchval("select count(*) from _realtime.wanted"):
            break
        await asyncio.sleep(0.05)
    assert await db.fetchval("select count(*) from _realtime.wanted") == 0


async def test_rows_of_a_gateway_that_stopped_writing_them_expire(devstack, db) -> None:
    relid = await db.fetchval("select 'public.jobs'::regclass::oid::bigint")
    await db.execute(
        "insert into _realtime.wanted (gateway, relid, event, written_at) values (1, $1, '*', now() - interval '31 s')",
        relid,
    )
    await db.execute("insert into _realtime.wanted (gateway, relid, event) values (2, $1, '*')", relid)
    await db.execute("select _realtime.want(3, '[]'::jsonb)")
    assert [r["gateway"] for r in await db.fetch("select gateway from _realtime.wanted")] == [2]


async def test_the_socket_declines_permessage_deflate_as_realtime_does(devstack) -> None:
    raw = await connect(devstack)  # websockets offers permessage-deflate
    assert raw.ws.response.headers.get("Sec-WebSocket-Extensions") is None


async def test_a_statement_that_changes_many_rows_sends_each_change_in_row_order_with_its_old_row(
    devstack, db, database_url
) -> None:
    raw = await connect(devstack)
    await raw.join("all", {"event": "*", "schema": "public", "table": "jobs"})
    await raw.recv()
    assert await raw.recv() == system("all", "ok", SUBSCRIBED)
    conn = await asyncpg.connect(database_url)
    sent: list[dict] = []
    await conn.add_listener(changes.CHANNEL, lambda *args: sent.append(json.loads(args[3])))
    barrier = Captured()
    await conn.add_listener(SETTLE, barrier.settled)
    try:
        ids = [
            r["id"]
            for r in await db.fetch(
                "insert into public.jobs (job_type, priority) select 'bulk', n from generate_series(1, 5) n"
                " returning id"
            )
        ]
        # Each statement's rows in the order it changed them, which RETURNING also follows.
        updated = await db.fetch(
            "update public.jobs set priority = -priority where job_type = 'bulk' returning id"
        )
        deleted = await db.fetch("delete from public.jobs where job_type = 'bulk' returning id")
        await settle(db, barrier)
        assert [(c["type"], (c["record"] or c["old_record"])["id"]) for c in sent] == [
            *(("INSERT", i) for i in ids),
            *(("UPDATE", r["id"]) for r in updated),
            *(("DELETE", r["id"]) for r in deleted),
        ]
        for c in sent[5:10]:
            assert c["old_record"]["id"] == c["record"]["id"]
            assert c["record"]["priority"] == -c["old_record"]["priority"] != 0
    finally:
        await conn.close()


async def test_starting_the_gateway_replaces_the_row_trigger_of_earlier_versions(devstack, db) -> None:
    await db.execute(
        "create trigger _realtime_capture after insert or update or delete on public.jobs"
        " for each row execute function _realtime.capture()"
    )
    await db.execute("select _realtime.sync_triggers()")
    names = await db.fetch(
        "select tgname from pg_trigger where tgrelid = 'public.jobs'::regclass and tgname like '_realtime%'"
        " order by 1"
    )
    assert [r["tgname"] for r in names] == [
        "_realtime_capture_delete",
        "_realtime_capture_insert",
        "_realtime_capture_update",
    ]
