"""Server closes and fault injection, seen through the unmodified supabase-py client."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
import websockets
from realtime import RealtimeSubscribeStates

from reactor.devstack.realtime.changes import APPLICATION_NAME
from tests.support.realtime import client, insert_job, subscribe, websocket_url

pytestmark = pytest.mark.anyio

JOBS_INSERTS = {"event": "INSERT", "table": "jobs", "schema": "public"}


@pytest.mark.parametrize("code", [1000, 1006])
async def test_client_rejoins_after_server_close_and_receives_new_events(
    devstack, db: asyncpg.Connection, code: int
) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "survivor", JOBS_INSERTS)

    await devstack.realtime.close_sockets(code)

    state, error = await feed.next_state()
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert isinstance(error, websockets.ConnectionClosed)
    assert (error.rcvd.code if error.rcvd else 1006) == code  # 1006: no close frame at all
    assert (await feed.next_state())[0] == RealtimeSubscribeStates.SUBSCRIBED
    await feed.live()
    job_id = await insert_job(db, "after the close")
    assert (await feed.next_change())["data"]["record"]["id"] == job_id
    await sb.realtime.close()


async def test_refused_websockets_get_503_until_the_fault_ends(devstack, db: asyncpg.Connection) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "refused", JOBS_INSERTS)
    devstack.faults.refuse_websockets(1.5)

    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(websocket_url(devstack.url, devstack.keys.service_role))
    await devstack.realtime.close_sockets(1000)

    assert refused.value.response.status_code == 503
    assert (await feed.next_state())[0] == RealtimeSubscribeStates.CHANNEL_ERROR
    # The client retries after 1 s and 2 s; the refusal has ended by the second retry.
    assert (await feed.next_state())[0] == RealtimeSubscribeStates.SUBSCRIBED
    await feed.live()
    job_id = await insert_job(db, "after the refusal")
    assert (await feed.next_change())["data"]["record"]["id"] == job_id
    await sb.realtime.close()


async def test_silent_feed_keeps_the_socket_but_withholds_events(devstack, db: asyncpg.Connection) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "silent", JOBS_INSERTS)
    devstack.faults.go_silent(1.0)

    await insert_job(db, "withheld")
    await asyncio.sleep(1.2)  # let the silence run out
    job_id = await insert_job(db, "after the silence")

    assert (await feed.next_change())["data"]["record"]["id"] == job_id
    assert sb.realtime.is_connected and feed.states.empty()
    await sb.realtime.close()


async def test_drop_fraction_one_drops_every_event(devstack, db: asyncpg.Connection) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "lossy", JOBS_INSERTS)
    devstack.faults.drop_events(1.0)

    for n in range(5):
        await insert_job(db, f"dropped {n}")
    await asyncio.sleep(0.5)  # let the dispatcher see them while the fault holds
    devstack.faults.drop_events(0.0)
    job_id = await insert_job(db, "kept")

    assert (await feed.next_change())["data"]["record"]["id"] == job_id
    assert sb.realtime.is_connected and feed.states.empty()
    await sb.realtime.close()


async def test_change_listener_reconnects_after_its_connection_is_killed(
    devstack, db: asyncpg.Connection
) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "relisten", JOBS_INSERTS)
    listeners = (
        "select pid from pg_stat_activity where application_name = $1 and datname = current_database()"
    )
    [old] = await db.fetch(listeners, APPLICATION_NAME)
    await db.execute("select pg_terminate_backend($1)", old["pid"])

    # Changes committed while the listener is away are lost (delivery is at most once), so keep
    # committing until one arrives through the new connection.
    async def keep_inserting() -> None:
        while True:
            await insert_job(db, "probe")
            await asyncio.sleep(0.1)

    writer = asyncio.create_task(keep_inserting())
    try:
        change = await feed.next_change()
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    assert change["data"]["record"]["job_type"] == "probe"
    [new] = await db.fetch(listeners, APPLICATION_NAME)
    assert new["pid"] != old["pid"]
    await sb.realtime.close()
