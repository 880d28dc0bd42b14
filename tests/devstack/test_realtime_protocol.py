"""The Phoenix wire protocol over a raw websocket: replies, errors and bad input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
import websockets

from tests.support.realtime import (
    JOBS,
    SUBSCRIBED,
    Raw,
    close,
    connect,
    insert_job,
    reply,
    system,
    websocket_url,
)

pytestmark = pytest.mark.anyio


async def test_heartbeat_is_answered_with_the_same_ref(devstack) -> None:
    raw = await connect(devstack)
    ref = await raw.push("phoenix", "heartbeat", {})
    assert await raw.recv() == reply("phoenix", ref, "ok", {})


async def test_socket_without_vsn_speaks_v1(devstack) -> None:
    ws = await websockets.connect(websocket_url(devstack.url, devstack.keys.service_role, vsn=None))
    raw = Raw(ws, "1.0.0")
    ref = await raw.push("phoenix", "heartbeat", {})
    assert await raw.recv() == reply("phoenix", ref, "ok", {})


async def test_join_echoes_bindings_in_order_with_stable_ids_then_subscribes(devstack) -> None:
    bindings = [
        {"event": "UPDATE", "schema": "public", "table": "jobs", "filter": "priority=gt.3"},
        {"event": "*", "schema": "public", "table": "jobs"},
    ]
    first, second = await connect(devstack), await connect(devstack)
    ref = await first.join("ids", *bindings)
    joined = await first.recv()
    await second.join("other", bindings[1])
    other = await second.recv()

    echoed = joined["payload"]["response"]["postgres_changes"]
    assert joined == reply("realtime:ids", ref, "ok", {"postgres_changes": echoed})
    assert [{k: v for k, v in b.items() if k != "id"} for b in echoed] == bindings
    ids = [b["id"] for b in echoed]
    assert all(isinstance(i, int) and 0 < i < 2**27 for i in ids) and ids[0] != ids[1]
    assert other["payload"]["response"]["postgres_changes"][0]["id"] == ids[1]
    assert await first.recv() == system("ids", "ok", SUBSCRIBED)


async def test_join_without_bindings_gets_no_subscription_message(devstack) -> None:
    raw = await connect(devstack)
    ref = await raw.join("plain")
    hb = await raw.push("phoenix", "heartbeat", {})
    assert await raw.recv() == reply("realtime:plain", ref, "ok", {"postgres_changes": []})
    assert await raw.recv() == reply("phoenix", hb, "ok", {})


async def test_unknown_topics_are_answered_like_phoenix(devstack) -> None:
    raw = await connect(devstack)
    refs = [
        await raw.push("realtime:never-joined", "broadcast", {}),
        await raw.push("rooms:lobby", "phx_join", {}),
        await raw.push("phoenix", "shout", {}),
        await raw.push("realtime:", "phx_join", {}),
        await raw.push("realtime:never-joined", "phx_leave", {}),
    ]
    frames = [await raw.recv() for _ in refs]
    unmatched = {"reason": "unmatched topic"}
    assert frames == [
        reply("realtime:never-joined", refs[0], "error", unmatched),
        reply("rooms:lobby", refs[1], "error", unmatched),
        reply("phoenix", refs[2], "error", unmatched),
        reply("realtime:", refs[3], "error", {"reason": "TopicNameRequired: You must provide a topic name"}),
        reply("realtime:never-joined", refs[4], "ok", {}),
    ]


async def test_messages_for_an_earlier_join_of_a_topic_are_ignored(devstack) -> None:
    raw = await connect(devstack)
    old_ref = await raw.join("rejoined")
    await raw.recv()
    new_ref = await raw.join("rejoined")
    await raw.recv_until("phx_close")
    await raw.push("realtime:rejoined", "phx_leave", {}, join_ref=old_ref)
    hb = await raw.push("phoenix", "heartbeat", {})

    assert await raw.recv() == reply("phoenix", hb, "ok", {})
    leave = await raw.push("realtime:rejoined", "phx_leave", {}, join_ref=new_ref)
    assert await raw.recv() == reply("realtime:rejoined", leave, "ok", {})


async def test_unknown_event_on_a_joined_channel_gets_no_reply(devstack) -> None:
    raw = await connect(devstack)
    join_ref = await raw.join("quiet")
    await raw.recv()
    await raw.push("realtime:quiet", "mystery", {"x": 1}, join_ref)
    hb = await raw.push("phoenix", "heartbeat", {})
    assert await raw.recv() == reply("phoenix", hb, "ok", {})


async def test_leave_replies_then_closes_the_channel(devstack, db: asyncpg.Connection) -> None:
    raw = await connect(devstack)
    join_ref = await raw.join("leaving", JOBS)
    await raw.recv_until("system")
    ref = await raw.push("realtime:leaving", "phx_leave", {}, join_ref)
    await insert_job(db, "after leaving")
    hb = await raw.push("phoenix", "heartbeat", {})

    assert await raw.recv() == reply("realtime:leaving", ref, "ok", {})
    assert await raw.recv() == close("realtime:leaving", join_ref)
    assert await raw.recv() == reply("phoenix", hb, "ok", {})


async def test_duplicate_join_answers_the_new_join_then_closes_the_old(devstack) -> None:
    raw = await connect(devstack)
    old_ref = await raw.join("twice")
    await raw.recv()
    new_ref = await raw.join("twice")

    assert await raw.recv() == reply("realtime:twice", new_ref, "ok", {"postgres_changes": []})
    assert await raw.recv() == close("realtime:twice", old_ref)


async def test_access_token_gets_no_reply_and_switches_whose_rows_arrive(
    devstack, db: asyncpg.Connection
) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    raw = await connect(devstack, devstack.keys.anon)
    join_ref = await raw.join("switch", JOBS, token=devstack.keys.user_token(alice))
    await raw.recv_until("system")
    await raw.push(
        "realtime:switch", "access_token", {"access_token": devstack.keys.user_token(bob)}, join_ref
    )
    resubscribed = await raw.recv()
    await insert_job(db, "alice's", user_id=alice)
    bob_job = await insert_job(db, "bob's", user_id=bob)

    assert resubscribed == system("switch", "ok", SUBSCRIBED)
    change = await raw.recv()
    assert change["event"] == "postgres_changes" and change["payload"]["data"]["record"]["id"] == bob_job


async def test_malformed_frames_close_only_that_socket_with_1011(devstack) -> None:
    for garbage in ["{not json", "[1, 2]", json.dumps({"topic": "phoenix"}), json.dumps({"topic": 1, "event":
                    "heartbeat", "payload": {}, "ref": "1"})]:  # fmt: skip
        raw = await connect(devstack)
        await raw.ws.send(garbage)
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await raw.recv()
        assert closed.value.rcvd.code == 1011
    healthy = await connect(devstack)
    ref = await healthy.push("phoenix", "heartbeat", {})
    assert await healthy.recv() == reply("phoenix", ref, "ok", {})


async def test_oversize_frame_closes_with_1009(devstack) -> None:
    raw = await connect(devstack)
    # Uncompressed (as Realtime declines permessage-deflate), the server closes while the frame
    # is still being sent, so the send itself may be what sees the close.
    with pytest.raises(websockets.ConnectionClosedError) as closed:
        await raw.ws.send(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {"x": "y" * 5_000_001},
                                      "ref": "1", "join_ref": None}))  # fmt: skip
        await raw.recv()
    assert closed.value.rcvd.code == 1009


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        (
            {**JOBS, "filter": "user_id=eq.x'); drop table public.jobs; --"},
            "Unable to subscribe to changes with given parameters. An exception happened so please check "
            "your connect parameters: [event: INSERT, schema: public, table: jobs, filters: "
            '[{"user_id", "eq", "x\'); drop table public.jobs; --", false}], select: nil]. Exception: '
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type uuid: "
            '"x\'); drop table public.jobs; --"',
        ),
        (
            {**JOBS, "filter": 'id"; drop table public.jobs; --=eq.1'},
            "Unable to subscribe to changes with given parameters. An exception happened so please check "
            "your connect parameters: [event: INSERT, schema: public, table: jobs, filters: "
            '[{"id\\"; drop table public.jobs; --", "eq", "1", false}], select: nil]. Exception: '
            'ERROR P0001 (raise_exception) invalid column for filter id"; drop table public.jobs; --',
        ),
        (
            {**JOBS, "table": "jobs; drop table public.jobs"},
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the "
            "given connect parameters: [event: INSERT, schema: public, table: jobs; drop table public.jobs, "
            "filters: [], select: nil]",
        ),
        ({**JOBS, "filter": "priority=foo.1"}, 'Error parsing `filter` params: ["foo", "1"]'),
        ({**JOBS, "filter": "undefined"}, 'Error parsing `filter` params: ["undefined"]'),
        (
            {**JOBS, "filter": "priority=in.1,2"},
            "Error parsing `filter` params: `in` filter value must be wrapped by parentheses",
        ),
    ],
)
async def test_injection_shaped_and_bad_bindings_get_realtimes_system_error(
    devstack, db: asyncpg.Connection, binding: dict[str, Any], message: str
) -> None:
    raw = await connect(devstack)
    await raw.join("hostile", binding)
    await raw.recv()

    assert await raw.recv() == system("hostile", "error", message)
    assert await db.fetchval("select to_regclass('public.jobs') is not null")


async def test_quotes_in_filter_values_are_compared_literally(devstack, db: asyncpg.Connection) -> None:
    raw = await connect(devstack)
    await raw.join("quoted", {**JOBS, "filter": 'job_type=eq.it\'s "quoted"'})
    await raw.recv_until("system")
    await insert_job(db, "it's")
    job_id = await insert_job(db, 'it\'s "quoted"')

    change = await raw.recv()
    assert change["payload"]["data"]["record"]["id"] == job_id


async def test_filter_cannot_widen_what_rls_lets_a_user_see(devstack, db: asyncpg.Connection) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    raw = await connect(devstack, devstack.keys.anon)
    await raw.join("snoop", {**JOBS, "filter": f"user_id=eq.{bob}"}, token=devstack.keys.user_token(alice))
    await raw.recv_until("system")
    await insert_job(db, "bob's", user_id=bob)
    hb = await raw.push("phoenix", "heartbeat", {})
    assert await raw.recv() == reply("phoenix", hb, "ok", {})


async def test_v2_serializer_uses_arrays_everywhere(devstack, db: asyncpg.Connection) -> None:
    raw = await connect(devstack, vsn="2.0.0")
    join_ref = await raw.join("v2", JOBS)
    joined, subscribed = await raw.recv(), await raw.recv()
    job_id = await insert_job(db, "v2")
    change = await raw.recv()
    hb = await raw.push("phoenix", "heartbeat", {})

    [binding] = joined[4]["response"]["postgres_changes"]
    assert joined == [join_ref, join_ref, "realtime:v2", "phx_reply", {"status": "ok", "response": {
        "postgres_changes": [{**JOBS, "id": binding["id"]}]}}]  # fmt: skip
    assert subscribed == [join_ref, None, "realtime:v2", "system", system("v2", "ok", SUBSCRIBED)["payload"]]
    assert change[:4] == [None, None, "realtime:v2", "postgres_changes"]
    assert change[4]["ids"] == [binding["id"]] and change[4]["data"]["record"]["id"] == job_id
    assert await raw.recv() == [None, hb, "phoenix", "phx_reply", {"status": "ok", "response": {}}]


async def test_silent_feed_still_answers_heartbeats(devstack) -> None:
    raw = await connect(devstack)
    devstack.faults.go_silent(5)
    ref = await raw.push("phoenix", "heartbeat", {})
    assert await raw.recv() == reply("phoenix", ref, "ok", {})


async def test_role_that_may_not_select_the_key_gets_realtimes_401_row_and_no_data(
    devstack, db: asyncpg.Connection
) -> None:
    raw = await connect(devstack, devstack.keys.anon)
    await raw.join("denied", JOBS)
    await raw.recv_until("system")
    await insert_job(db, "secret", payload={"card": "4111"})

    change = await raw.recv()
    assert change["payload"]["data"] == {
        "schema": "public", "table": "jobs", "type": "INSERT", "commit_timestamp": None,
        "columns": [], "record": {}, "errors": ["Error 401: Unauthorized"],
    }  # fmt: skip
