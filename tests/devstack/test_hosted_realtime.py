"""The hosted profile's Realtime behaves as hosted Supabase Realtime: changes are polled in batches,
a project over its message quota has every polled change dropped silently, a change over the
record limit arrives with Realtime's 413 error and only its small fields, joins and connections
meet the project's limits with Realtime's own reasons, and every frame travels the round trip.
Each test also shows that the local profile does none of it.

docs/hosted-supabase.md gives the sources of each behaviour and number.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from loguru import logger

from reactor.devstack.profile import Profile
from reactor.devstack.realtime.socket import RateCounter
from reactor.devstack.stack import Stack, serve
from tests.support.realtime import JOBS, client, connect, insert_job, reply, subscribe

pytestmark = pytest.mark.anyio

QUOTA_LOG = "MessagePerSecondRateLimitReached: Too many postgres changes messages per second"


@contextlib.asynccontextmanager
async def running(database_url: str, profile: Profile) -> AsyncIterator[Stack]:
    async with serve(database_url, port=0, profile=profile) as stack:
        yield stack


def hosted(**overrides: Any) -> Profile:
    return Profile.hosted("free", **{"round_trip_ms": 0.0, **overrides})


PROFILES = {"hosted": hosted, "local": lambda **_: Profile.local()}


# -- polled delivery -------------------------------------------------------------------------------


async def test_hosted_changes_wait_for_the_poll_and_come_in_batches(database_url, db: asyncpg.Connection):
    profile = hosted(poll_busy_seconds=0.05, poll_idle_seconds=3.0, changes_per_poll=2)
    async with running(database_url, profile) as stack:
        sb = await client(stack.url, stack.keys.service_role)
        feed = await subscribe(sb, "polled", JOBS)
        counters = stack.realtime.counters
        await counters.until(lambda c: c.polls >= 1 and c.waiting == 0)  # now idle for 3 s

        first = await insert_job(db, "one")
        await counters.until(lambda c: c.waiting == 1)
        assert feed.changes.empty() and counters.delivered == 0  # captured, not yet polled
        assert (await feed.next_change())["data"]["record"]["id"] == first

        rows = await db.fetch(
            "insert into public.jobs (job_type) select 'many' from generate_series(1, 5) returning id"
        )
        ids = [(await feed.next_change())["data"]["record"]["id"] for _ in rows]

        assert ids == [r["id"] for r in rows]  # commit order kept across polls
        assert counters.polled == 6 and counters.max_batch == 2
        assert counters.lag_max > 0 and counters.delivered == 6
        assert counters.by_topic["realtime:polled"] == 6
        await sb.realtime.close()


async def test_local_changes_stream_without_polls(database_url, db: asyncpg.Connection):
    async with running(database_url, Profile.local()) as stack:
        sb = await client(stack.url, stack.keys.service_role)
        feed = await subscribe(sb, "streamed", JOBS)
        job_id = await insert_job(db, "one")
        assert (await feed.next_change())["data"]["record"]["id"] == job_id
        assert stack.realtime.counters.polls == 0 and stack.realtime.counters.delivered == 1
        await sb.realtime.close()


# -- message quota ---------------------------------------------------------------------------------


def test_rate_counter_averages_five_second_buckets_over_a_minute():
    """rate_counter.ex: avg = sum(last 12 buckets) / len(buckets) / 5; trigger at avg >= limit,
    release at a later tick with avg < limit."""
    triggered = []
    counter = RateCounter(5, tick_seconds=5, max_buckets=12, on_trigger=lambda: triggered.append(1))
    counter.add(100)
    counter.tick()
    assert (counter.avg, counter.triggered, triggered) == (20.0, True, [1])
    averages = []
    for _ in range(4):
        counter.tick()
        averages.append((counter.avg, counter.triggered))
    assert averages == [(10.0, True), (100 / 15, True), (5.0, True), (4.0, False)]
    for _ in range(20):
        counter.tick(extra=24)  # 24 per 5 s: 4.8 a second, under the limit
    assert len(counter.buckets) == 12 and counter.avg == pytest.approx(4.8) and triggered == [1]


async def quota_fault(stack: Stack) -> None:
    key = stack.keys.service_role
    async with httpx.AsyncClient(base_url=stack.url) as http:
        answer = await http.post(
            "/_devstack/faults", json={"message_rate": 100, "seconds": 10}, headers={"apikey": key}
        )
    assert answer.status_code == 200


async def test_hosted_quota_drops_every_polled_change_silently(database_url, db: asyncpg.Connection):
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="ERROR")
    profile = hosted(messages_per_second=5, poll_busy_seconds=0.05, poll_idle_seconds=0.1)
    try:
        async with running(database_url, profile) as stack:
            sb = await client(stack.url, stack.keys.service_role)
            feed = await subscribe(sb, "quota", JOBS)
            counters = stack.realtime.counters
            await quota_fault(stack)
            await counters.until(lambda c: c.quota_reached == 1)  # at the next 5 s tick

            await insert_job(db, "dropped")
            await db.execute("insert into public.jobs (job_type) select 'x' from generate_series(1, 3)")
            await counters.until(lambda c: c.dropped == 4)

            assert counters.delivered == 0 and feed.changes.empty()
            assert stack.realtime.message_rate is not None and stack.realtime.message_rate.avg >= 5
            assert stack.realtime.event_rate is not None and not stack.realtime.event_rate.triggered
            assert lines.count(QUOTA_LOG) == 1  # logged once, when the limit triggered
            await sb.realtime.close()
    finally:
        logger.remove(sink)


async def test_local_has_no_quota(database_url, db: asyncpg.Connection):
    async with running(database_url, Profile.local()) as stack:
        sb = await client(stack.url, stack.keys.service_role)
        feed = await subscribe(sb, "unlimited", JOBS)
        await quota_fault(stack)
        job_id = await insert_job(db, "kept")
        assert (await feed.next_change())["data"]["record"]["id"] == job_id
        assert stack.realtime.message_rate is None and stack.realtime.counters.dropped == 0
        await sb.realtime.close()


# -- record size -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hosted", "local"])
async def test_record_over_the_limit_keeps_only_small_fields(database_url, db: asyncpg.Connection, name):
    async with running(database_url, PROFILES[name](max_record_bytes=2000)) as stack:
        sb = await client(stack.url, stack.keys.service_role)
        feed = await subscribe(sb, "big", JOBS)
        job_id = await insert_job(db, "big", payload={"blob": "x" * 3000})
        data = (await feed.next_change())["data"]
        if name == "hosted":
            assert data["errors"] == ["Error 413: Payload Too Large"]
            assert data["record"]["id"] == job_id and data["record"]["job_type"] == "big"
            assert "payload" not in data["record"] and len(data["columns"]) == 24
        else:
            assert data["errors"] is None and data["record"]["payload"] == {"blob": "x" * 3000}
        await sb.realtime.close()


# -- joins, channels, connections ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hosted", "local"])
async def test_channels_per_connection(database_url, name):
    async with running(database_url, PROFILES[name](channels_per_connection=2)) as stack:
        raw = await connect(stack)
        answers = []
        for topic in ("a", "b", "c"):
            ref = await raw.join(topic)
            answers.append((ref, (await raw.recv_until("phx_reply"))[-1]))
        ref, third = answers[2]
        if name == "hosted":
            refused = {"reason": "ChannelRateLimitReached: Too many channels"}
            assert third == reply("realtime:c", ref, "error", refused)
        else:
            assert third["payload"]["status"] == "ok"
        assert [a["payload"]["status"] for _, a in answers[:2]] == ["ok", "ok"]
        await raw.ws.close()


@pytest.mark.parametrize("name", ["hosted", "local"])
async def test_private_only_refuses_public_channels(database_url, name):
    async with running(database_url, PROFILES[name](private_only=True)) as stack:
        raw = await connect(stack)
        ref = await raw.join("public-room", JOBS)
        answer = (await raw.recv_until("phx_reply"))[-1]
        if name == "hosted":
            refused = {"reason": "PrivateOnly: This project only allows private channels"}
            assert answer == reply("realtime:public-room", ref, "error", refused)
        else:
            assert answer["payload"]["status"] == "ok"
        await raw.ws.close()


@pytest.mark.parametrize("name", ["hosted", "local"])
async def test_max_connections_refuses_the_upgrade(database_url, name):
    async with running(database_url, PROFILES[name](max_connections=1)) as stack:
        first = await connect(stack)
        await first.join("only")
        assert (await first.recv_until("phx_reply"))[-1]["payload"]["status"] == "ok"
        if name == "hosted":
            with pytest.raises(websockets.InvalidStatus) as refused:
                await connect(stack)
            response = refused.value.response
            assert (response.status_code, response.body) == (429, b'{"error":"Too many connected users"}')
        else:
            second = await connect(stack)
            await second.ws.close()
        await first.ws.close()


async def test_hosted_joins_per_second_refuses_joins_and_upgrades(database_url):
    async with running(database_url, hosted(joins_per_second=1)) as stack:
        raw = await connect(stack)
        for n in range(6):  # 6 joins in the first 5 s bucket: an average of 1.2 a second
            await raw.join(f"room{n}")
            assert (await raw.recv_until("phx_reply"))[-1]["payload"]["status"] == "ok"
        join_rate = stack.realtime.join_rate
        assert join_rate is not None
        await stack.realtime.counters.until(lambda _: join_rate.triggered)

        ref = await raw.join("one-too-many")
        refused = {"reason": "ClientJoinRateLimitReached: Too many joins per second"}
        assert (await raw.recv_until("phx_reply"))[-1] == reply(
            "realtime:one-too-many", ref, "error", refused
        )
        with pytest.raises(websockets.ConnectionClosedOK):
            await raw.recv()  # Realtime disconnects the socket
        with pytest.raises(websockets.InvalidStatus) as upgrade:
            await connect(stack)
        response = upgrade.value.response
        assert (response.status_code, response.body) == (429, b'{"error":"Too many joins per second"}')


async def test_local_joins_are_not_limited(database_url):
    async with running(database_url, Profile.local()) as stack:
        raw = await connect(stack)
        for n in range(20):
            await raw.join(f"room{n}")
            assert (await raw.recv_until("phx_reply"))[-1]["payload"]["status"] == "ok"
        assert stack.realtime.join_rate is None
        await raw.ws.close()


# -- distance --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hosted", "local"])
async def test_frames_travel_the_round_trip_in_order(database_url, name):
    profile = hosted(round_trip_ms=400.0) if name == "hosted" else Profile.local()
    async with running(database_url, profile) as stack:
        raw = await connect(stack)
        started = time.monotonic()
        refs = [await raw.push("phoenix", "heartbeat", {}) for _ in range(5)]
        answers = [await raw.recv() for _ in refs]
        took = time.monotonic() - started
        assert [a["ref"] for a in answers] == refs
        if name == "hosted":
            assert took >= 0.4  # 200 ms in, 200 ms out
        else:
            assert stack.realtime._delay == 0.0
        await raw.ws.close()
