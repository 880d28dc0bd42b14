"""The listener's connection without a socket: what it joins, when the feed counts as subscribed
and live, what it asks to be replayed, what ends a connection, how long it waits before the next,
and the probe.

`FakeClient` and `FakeChannel` stand in for the official Realtime client's objects only: they
record what the listener asks for, and the test plays the server's side by calling back the way
the client does (subscribe states, system messages, the database's announcements, inserts). The real client against the local
stack's Realtime is tests/worker/test_realtime.py's."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from loguru import logger
from realtime import RealtimeSubscribeStates

from reactor import listener as listener_module
from reactor.feed import Feed
from reactor.listener import (
    PROBE_JOB_TYPE,
    REPLICATION_READY,
    Listener,
    Reconnects,
    insert_filter,
    realtime_client,
)
from reactor.store import Rejected

pytestmark = pytest.mark.anyio


class FakeChannel:
    def __init__(self, topic: str, params: dict[str, Any] | None) -> None:
        self.topic = topic
        self.config = (params or {}).get("config", {})  # what the join will say
        self.changes: list[dict[str, Any]] = []  # what the listener asked to hear
        self.broadcasts: list[str] = []
        self._on_change: Callable[[dict[str, Any]], None] | None = None
        self._on_broadcast: list[Callable[[dict[str, Any]], None]] = []
        self._on_system: list[Callable[[Any], None]] = []
        self._on_state: Callable[[RealtimeSubscribeStates, Exception | None], None] | None = None

    def on_postgres_changes(self, event: str, callback: Any, **binding: Any) -> FakeChannel:
        self.changes.append({"event": event, **binding})
        self._on_change = callback
        return self

    def on_broadcast(self, event: str, callback: Callable[[dict[str, Any]], None]) -> FakeChannel:
        self.broadcasts.append(event)
        self._on_broadcast.append(callback)
        return self

    def on_system(self, callback: Callable[[Any], None]) -> FakeChannel:
        self._on_system.append(callback)
        return self

    async def subscribe(self, callback: Any) -> FakeChannel:
        self._on_state = callback
        return self

    # The server's side, as the client delivers it.
    @property
    def asked(self) -> bool:
        return self._on_state is not None

    def answer(self, state: RealtimeSubscribeStates, error: Exception | None = None) -> None:
        assert self._on_state is not None
        self._on_state(state, error)

    def system(self, message: str, extension: str = "system") -> None:
        for callback in self._on_system:
            callback(SimpleNamespace(channel=self.topic, extension=extension, message=message))

    def announce(self, table: str, record: dict[str, Any]) -> None:
        """A broadcast from the database's reactor.announce, as the client delivers it."""
        for callback in self._on_broadcast:
            callback({"type": "broadcast", "event": "job", "payload": {"table": table, "record": record}})

    def insert(self, table: str, record: dict[str, Any]) -> None:
        assert self._on_change is not None
        self._on_change({"data": {"type": "INSERT", "table": table, "record": record}})


class FakeClient:
    def __init__(self, url: str, key: str, refuse: bool) -> None:
        self.url, self.key, self.refuse = url, key, refuse
        self.channels: dict[str, FakeChannel] = {}
        self.is_connected = False
        self.closed = False
        self.hang_on_close = False

    async def connect(self) -> None:
        if self.refuse:
            raise ConnectionRefusedError("connection refused")
        self.is_connected = True

    def channel(self, topic: str, params: dict[str, Any] | None = None) -> FakeChannel:
        self.channels[topic] = FakeChannel(topic, params)
        return self.channels[topic]

    async def close(self) -> None:
        await anyio.sleep(60 if self.hang_on_close else 0)  # a checkpoint, as a real close has
        self.is_connected, self.closed = False, True


class Clients:
    """The listener's client factory: one fake client per connection, kept in order."""

    def __init__(self, refuse: int = 0) -> None:
        self.made: list[FakeClient] = []
        self._refuse = refuse  # the first connections fail to connect

    def __call__(self, url: str, key: str) -> FakeClient:
        self.made.append(FakeClient(url, key, refuse=len(self.made) < self._refuse))
        return self.made[-1]

    @property
    def last(self) -> FakeClient:
        return self.made[-1]


class Worker:
    """Everything the listener asks of the rest of the worker, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.ticks: list[float] = []  # when a tick was asked for at once (the probe's)

    def wake(self, table: str | None) -> None:
        self.calls.append(("wake", table))

    def handed(self, table: str, record: dict[str, Any]) -> None:
        self.calls.append(("handed", table, record["id"]))

    def schedule(self, table: str, at: datetime) -> None:
        self.calls.append(("schedule", table, at))

    def tick_now(self) -> None:
        self.ticks.append(time.monotonic())
        self.calls.append(("tick_now",))

    def health_changed(self) -> None:
        self.calls.append(("health_changed",))


TABLES = {"jobs": ["mine"], "other": ["theirs", "more"]}
TOPIC = "reactor:0123abcd"


async def topic() -> str:
    return TOPIC


def make(
    clients: Clients,
    worker: Worker,
    *,
    feed: Feed | None = None,
    events: Counter[str] | None = None,
    probe_seconds: float = 600.0,
    hear_all: bool = False,
    url: str = "https://project.supabase.co",
    tables: dict[str, list[str]] | None = None,
    worker_topic: Callable[[], Any] = topic,
) -> Listener:
    return Listener(
        url,
        "service-key",
        tables or TABLES,
        "w1",
        feed or Feed(True),
        worker.wake,
        worker,
        probe_seconds,
        worker.handed,
        Counter() if events is None else events,
        worker_topic,
        hear_all=hear_all,
        client=clients,
    )


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `check` until it is truthy: a safety net, not a timing assertion."""
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.005)
    return value


@asynccontextmanager
async def logged(level: str = "INFO") -> AsyncIterator[list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])), level=level)
    try:
        yield lines
    finally:
        logger.remove(sink)


def channels(client: FakeClient) -> list[FakeChannel]:
    return list(client.channels.values())


async def joined(clients: Clients) -> FakeClient:
    """The newest connection, once each of its channels has asked to join."""

    def ready() -> bool:
        if not clients.made or clients.last.closed:
            return False
        found = channels(clients.last)
        return bool(found) and all(c.asked for c in found)

    await until(ready)
    return clients.last


async def subscribed(clients: Clients) -> None:
    """Play the server answering every channel of the newest connection's join."""
    for channel in channels(await joined(clients)):
        channel.answer(RealtimeSubscribeStates.SUBSCRIBED)


def test_the_client_connects_to_the_projects_realtime_with_its_own_reconnect_off() -> None:
    client = realtime_client("wss://project.supabase.co/realtime/v1", "service-key")
    assert client.url == "wss://project.supabase.co/realtime/v1/websocket?apikey=service-key"
    assert client.auto_reconnect is False  # the listener supervises the connection


@pytest.mark.parametrize(
    ("url", "websocket"),
    [
        ("https://project.supabase.co", "wss://project.supabase.co/realtime/v1"),
        ("http://127.0.0.1:54321", "ws://127.0.0.1:54321/realtime/v1"),
    ],
)
async def test_the_worker_joins_its_own_private_topic_for_the_databases_announcements(
    url: str, websocket: str
) -> None:
    clients, worker = Clients(), Worker()
    listener = make(clients, worker, url=url)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        assert (clients.last.url, clients.last.key) == (websocket, "service-key")
        (channel,) = channels(clients.last)
        assert (channel.topic, channel.broadcasts, channel.changes) == (TOPIC, ["job"], [])
        assert channel.config == {
            "broadcast": {
                "ack": False,
                "self": False,
                "replication_ready": True,
            },  # no replay: nothing missed
            "presence": {"key": "", "enabled": False},
            "private": True,  # the service key may join it; a private-only project refuses any other
        }
        group.cancel_scope.cancel()


async def test_hearing_all_each_table_gets_a_private_channel_for_the_inserts_of_its_job_types() -> None:
    clients, worker = Clients(), Worker()
    listener = make(clients, worker, hear_all=True)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        found = channels(clients.last)
        assert [c.topic for c in found] == [TOPIC, "reactor:jobs:w1", "reactor:other:w1"]
        assert [c.config for c in found[1:]] == [{"private": True}] * 2
        assert [c.changes for c in found] == [
            [],  # probes and cancel signals still come announced
            [{"event": "INSERT", "table": "jobs", "schema": "public", "filter": "job_type=in.(mine)"}],
            [
                {
                    "event": "INSERT",
                    "table": "other",
                    "schema": "public",
                    "filter": "job_type=in.(theirs,more)",
                }
            ],
        ]
        group.cancel_scope.cancel()


async def test_the_feed_is_subscribed_once_every_channel_is_and_then_a_claim_of_every_table_looks() -> None:
    clients, worker, events, feed = Clients(), Worker(), Counter[str](), Feed(True)
    listener = make(clients, worker, feed=feed, events=events, hear_all=True)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        *first, last = channels(await joined(clients))
        for channel in first:
            channel.answer(RealtimeSubscribeStates.SUBSCRIBED)
        await anyio.sleep(0)
        assert (listener.state, listener.healthy()) == ("connecting", False)  # two of three
        worker.calls.clear()
        last.answer(RealtimeSubscribeStates.SUBSCRIBED)
        await until(lambda: feed.state == "subscribed")
        assert listener.healthy()
        assert events["realtime_subscriptions"] == 1
        await until(lambda: ("wake", None) in worker.calls)
        # Subscribed is not yet live: broadcasts from the database flow only once Realtime's
        # replication connection is established.
        assert worker.calls == [("health_changed",), ("wake", None)]
        assert not feed.live("jobs")
        group.cancel_scope.cancel()


async def test_replication_established_makes_every_tables_feed_live_and_wakes_a_claim() -> None:
    clients, worker, events, feed = Clients(), Worker(), Counter[str](), Feed(True)
    listener = make(clients, worker, feed=feed, events=events)
    async with anyio.create_task_group() as group, logged() as lines:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        worker.calls.clear()
        (channel,) = channels(clients.last)
        channel.system("Subscribed to PostgreSQL", "postgres_changes")  # not this channel's news
        assert (feed.live("jobs"), worker.calls, events["realtime_live"]) == (False, [], 0)
        channel.system(REPLICATION_READY)
        assert (feed.live("jobs"), feed.live("other")) == (True, True)
        assert worker.calls == [("wake", None)]  # rows committed before it were never sent
        assert events["realtime_live"] == 1
        assert ("INFO", "Realtime live") in lines
        group.cancel_scope.cancel()


async def test_hearing_all_subscribed_to_postgresql_wakes_a_claim_of_that_table() -> None:
    clients, worker, feed = Clients(), Worker(), Feed(True)
    listener = make(clients, worker, feed=feed, hear_all=True)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        worker.calls.clear()
        channels(clients.last)[2].system("Subscribed to PostgreSQL", "postgres_changes")
        assert worker.calls == [("wake", "other")] and not feed.live("other")
        channels(clients.last)[2].insert("other", {"id": 4, "job_type": "more", "status": "pending"})
        assert worker.calls[-1] == ("wake", "other")
        group.cancel_scope.cancel()


async def test_announcements_on_the_channel_reach_the_listener() -> None:
    clients, worker = Clients(), Worker()
    listener = make(clients, worker)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: listener.state == "subscribed")
        worker.calls.clear()
        channels(clients.last)[0].announce(
            "jobs", {"id": 3, "job_type": "mine", "locked_by": "w1", "status": "processing"}
        )
        assert worker.calls == [("handed", "jobs", 3)]
        group.cancel_scope.cancel()


async def test_a_closed_socket_ends_the_connection_which_goes_down_and_wakes_a_claim() -> None:
    clients, worker, feed = Clients(), Worker(), Feed(True)
    listener = make(clients, worker, feed=feed)
    async with logged() as lines, anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        channels(clients.last)[0].system(REPLICATION_READY)
        worker.calls.clear()
        assert listener.went_down_at is None
        clients.last.is_connected = False  # the socket closed under it
        closed = time.monotonic()
        # _connection returned by itself: the task group ended without being cancelled.
    assert time.monotonic() - closed < 1.0  # noticed within a quarter second, not at the next probe
    assert feed.state == "down" and not listener.healthy()
    assert listener.went_down_at is not None
    assert worker.calls == [("health_changed",), ("wake", None)]  # ticks go fast, a claim looks
    assert clients.last.closed
    assert ("WARNING", "Realtime socket closed") in lines
    assert ("INFO", "Realtime down") in lines


async def test_a_new_connection_forgets_which_tables_were_live_and_asks_for_what_it_missed() -> None:
    clients, worker, feed, events = Clients(), Worker(), Feed(True), Counter[str]()
    listener = make(clients, worker, feed=feed, events=events)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        channels(clients.last)[0].system(REPLICATION_READY)
        clients.last.is_connected = False
    lost = time.time()
    assert not feed.live("jobs")
    assert events["realtime_subscriptions"] == 1
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        assert not feed.live("jobs")  # live again only once Realtime says so on the new connection
        assert events["realtime_subscriptions"] == 2
        replay = channels(clients.last)[0].config["broadcast"]["replay"]
        assert replay["limit"] == 25  # the most Realtime replays
        assert (lost - 2) * 1000 <= replay["since"] <= (lost - 1) * 1000 + 1  # a second before the drop
        group.cancel_scope.cancel()


@pytest.mark.parametrize("state", [RealtimeSubscribeStates.CHANNEL_ERROR, RealtimeSubscribeStates.TIMED_OUT])
async def test_a_channel_that_fails_to_subscribe_fails_the_connection(state: RealtimeSubscribeStates) -> None:
    clients, worker, feed, events = Clients(), Worker(), Feed(True), Counter[str]()
    listener = make(clients, worker, feed=feed, events=events, hear_all=True)
    async with logged() as lines, anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        announcements, jobs, other = channels(await joined(clients))
        announcements.answer(RealtimeSubscribeStates.SUBSCRIBED)
        jobs.answer(RealtimeSubscribeStates.SUBSCRIBED)
        other.answer(state, RuntimeError("join refused"))
    assert feed.state == "down" and events["realtime_subscriptions"] == 0
    assert clients.last.closed
    assert ("WARNING", f"Realtime channel reactor:other:w1: {state.value} join refused") in lines
    assert (
        "WARNING",
        "Realtime unavailable: ConnectionError: a channel failed to subscribe; ticking fast",
    ) in lines


async def test_a_topic_the_database_cannot_give_fails_the_connection_with_its_reason() -> None:
    async def no_topic() -> str:
        raise Rejected("Could not find the function public.reactor_worker_topic(p_worker)", 404)

    clients, worker, feed = Clients(), Worker(), Feed(True)
    listener = make(clients, worker, feed=feed, worker_topic=no_topic)
    async with logged() as lines:
        with anyio.fail_after(10):
            await listener._connection()
    assert feed.state == "down" and clients.last.channels == {}
    assert any(
        "reactor_worker_topic" in m and m.startswith("Realtime unavailable: Rejected") for _, m in lines
    )


async def test_a_channel_that_errors_after_subscribing_ends_the_connection() -> None:
    clients, worker, feed = Clients(), Worker(), Feed(True)
    listener = make(clients, worker, feed=feed)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        async with logged() as lines:
            channels(clients.last)[0].answer(RealtimeSubscribeStates.CHANNEL_ERROR, None)
    assert feed.state == "down" and clients.last.closed
    assert ("WARNING", f"Realtime channel {TOPIC}: CHANNEL_ERROR ") in lines


async def test_a_subscription_that_never_answers_fails_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener_module, "_SUBSCRIBE_TIMEOUT", 0.2)
    clients, worker, feed = Clients(), Worker(), Feed(True)
    listener = make(clients, worker, feed=feed)
    async with logged() as lines:
        with anyio.fail_after(10):
            await listener._connection()  # returns: nobody ever answers the joins
    assert feed.state == "down" and clients.last.closed
    assert ("WARNING", "Realtime unavailable: TimeoutError: ; ticking fast") in lines


async def test_a_refused_connection_is_down_and_wakes_a_claim() -> None:
    clients, worker, feed = Clients(refuse=1), Worker(), Feed(True)
    listener = make(clients, worker, feed=feed)
    async with logged() as lines:
        with anyio.fail_after(10):
            await listener._connection()
    assert feed.state == "down" and worker.calls == [("health_changed",), ("wake", None)]
    assert (
        "WARNING",
        "Realtime unavailable: ConnectionRefusedError: connection refused; ticking fast",
    ) in lines


async def test_after_a_failed_connection_the_listener_connects_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener_module, "random", Ceilings())  # no wait: the waits are tested below
    clients, worker, feed = Clients(refuse=2), Worker(), Feed(True)
    listener = make(clients, worker, feed=feed)
    async with logged() as lines, anyio.create_task_group() as group:
        group.start_soon(listener.run)
        await until(lambda: len(clients.made) == 3)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        group.cancel_scope.cancel()
    assert [m for _, m in lines if m.startswith("Realtime reconnecting")] == [
        "Realtime reconnecting in 0.0 s"
    ] * 2


def draws(failures: int, lived: float = 1.0, n: int = 400) -> list[float]:
    """The wait after the `failures`-th connection in a row that lived `lived` seconds."""
    found = []
    for _ in range(n):
        reconnects = Reconnects()
        for _ in range(failures - 1):
            reconnects.delay(lived)
        found.append(reconnects.delay(lived))
    return found


@pytest.mark.parametrize(
    ("failures", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (30, 10.0)]
)
def test_reconnects_wait_a_random_time_under_a_ceiling_that_doubles_up_to_ten_seconds(
    failures: int, ceiling: float
) -> None:
    waits = draws(failures)
    assert all(0 <= w <= ceiling for w in waits)
    assert min(waits) < ceiling * 0.1 and max(waits) > ceiling * 0.9  # full jitter, from zero


def test_a_connection_that_lived_over_a_minute_starts_the_backoff_over() -> None:
    reconnects = Reconnects()
    for _ in range(6):
        reconnects.delay(59.0)
    assert max(reconnects.delay(59.0) for _ in range(1)) <= 10.0
    after_long = []
    for _ in range(200):
        reconnects = Reconnects()
        for _ in range(6):
            reconnects.delay(1.0)
        after_long.append(reconnects.delay(61.0))
    assert max(after_long) <= 1.0
    still_failing = []
    for _ in range(200):
        reconnects = Reconnects()
        for _ in range(6):
            reconnects.delay(1.0)
        still_failing.append(reconnects.delay(59.0))
    assert max(still_failing) > 1.0


class Ticking(Worker):
    """A worker whose next tick carries the probe when one is wanted, as the ticker does."""

    def __init__(self, feed: Feed, send: bool = True) -> None:
        super().__init__()
        self._feed, self.send = feed, send

    def tick_now(self) -> None:
        super().tick_now()
        if self.send and self._feed.probe_wanted("jobs"):
            self._feed.probe_sent()


PROBE_SECONDS = 1.2  # the probe's wait is a third of it, 0.4 s; a feed quiet for 0.8 s is probed
WAIT, IDLE = PROBE_SECONDS / 3, PROBE_SECONDS * 2 / 3


def probe_row(**record: Any) -> dict[str, Any]:
    return {"id": 99, "job_type": PROBE_JOB_TYPE, "locked_by": "w1", "status": "cancelled", **record}


async def test_a_quiet_feed_is_probed_and_a_probe_heard_keeps_the_connection() -> None:
    feed, events = Feed(True), Counter[str]()
    clients, worker = Clients(), Ticking(feed)
    listener = make(clients, worker, feed=feed, events=events, probe_seconds=PROBE_SECONDS)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        quiet_since = listener.last_event
        await until(lambda: worker.ticks)
        assert IDLE <= worker.ticks[0] - quiet_since < IDLE + 0.6  # on its time, not a period later
        channels(clients.last)[0].announce("jobs", probe_row())
        await until(lambda: events["realtime_probes_heard"] == 1)
        heard_at = listener.last_event
        await until(lambda: len(worker.ticks) == 2)  # the next once the feed is quiet again
        assert IDLE <= worker.ticks[1] - heard_at < IDLE + 0.6
        channels(clients.last)[0].announce("jobs", probe_row())
        await until(lambda: events["realtime_probes_heard"] == 2)
        assert feed.state == "subscribed" and not clients.last.closed
        group.cancel_scope.cancel()


async def test_a_busy_feed_needs_no_probe() -> None:
    feed, clients = Feed(True), Clients()
    worker = Ticking(feed)
    listener = make(clients, worker, feed=feed, probe_seconds=PROBE_SECONDS)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        jobs = channels(clients.last)[0]
        for _ in range(8):  # a change every tenth of a second, for twice the quiet time
            await anyio.sleep(IDLE / 4)
            jobs.announce("jobs", {"id": 5, "job_type": "mine", "locked_by": "w1", "status": "completed"})
        assert worker.ticks == []
        quiet_since = listener.last_event
        await until(lambda: worker.ticks)  # probing resumes once the feed goes quiet
        assert IDLE <= worker.ticks[0] - quiet_since < IDLE + 0.6
        group.cancel_scope.cancel()


async def test_a_probe_that_never_arrives_ends_the_connection() -> None:
    feed, clients, events = Feed(True), Clients(), Counter[str]()
    worker = Ticking(feed)
    listener = make(clients, worker, feed=feed, events=events, probe_seconds=PROBE_SECONDS)
    async with logged() as lines:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(listener._connection)
                await subscribed(clients)
                await until(lambda: feed.state == "subscribed")
                quiet_since = listener.last_event
                await until(lambda: worker.ticks)
                await until(lambda: feed.state == "down")
                down = time.monotonic()
    assert worker.ticks[0] + WAIT <= down < worker.ticks[0] + WAIT + 0.6
    assert down - quiet_since >= IDLE + WAIT
    assert clients.last.closed and events["realtime_probes_heard"] == 0
    assert ("WARNING", "Realtime feed is silent: the probe event never arrived; reconnecting") in lines


async def test_a_probe_another_worker_hears_does_not_count() -> None:
    feed, clients, events = Feed(True), Clients(), Counter[str]()
    worker = Ticking(feed)
    listener = make(clients, worker, feed=feed, events=events, probe_seconds=PROBE_SECONDS)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(listener._connection)
            await subscribed(clients)
            await until(lambda: worker.ticks)
            channels(clients.last)[0].announce("jobs", probe_row(locked_by="w2"))
            await until(lambda: feed.state == "down")
    assert events["realtime_probes_heard"] == 0


async def test_a_probe_no_tick_could_send_is_withdrawn_and_asked_for_again() -> None:
    feed, clients, events = Feed(True), Clients(), Counter[str]()
    worker = Ticking(feed, send=False)  # the API is down: no tick gets through
    listener = make(clients, worker, feed=feed, events=events, probe_seconds=PROBE_SECONDS)
    async with logged() as lines, anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: feed.state == "subscribed")
        await until(lambda: worker.ticks)
        assert feed.probe_wanted("jobs")
        await until(lambda: not feed.probe_wanted("jobs"))
        withdrawn = listener.last_event  # the quiet period starts over
        assert WAIT <= withdrawn - worker.ticks[0] < WAIT + 0.6
        assert ("WARNING", f"Realtime probe not sent: no tick got through within {WAIT:g} s") in lines
        assert feed.state == "subscribed"  # an unsent probe says nothing about the feed
        worker.send = True
        await until(lambda: len(worker.ticks) == 2)
        assert IDLE <= worker.ticks[1] - withdrawn < IDLE + 0.6  # a full quiet period later
        channels(clients.last)[0].announce("jobs", probe_row())
        await until(lambda: events["realtime_probes_heard"] == 1)
        group.cancel_scope.cancel()


async def test_a_listener_stopped_at_shutdown_still_closes_its_socket() -> None:
    clients, worker = Clients(), Worker()
    listener = make(clients, worker)
    async with anyio.create_task_group() as group:
        group.start_soon(listener._connection)
        await subscribed(clients)
        await until(lambda: listener.state == "subscribed")
        group.cancel_scope.cancel()  # the worker stopping its services
    assert clients.last.closed and listener.state == "down"


async def test_a_socket_that_will_not_close_does_not_hold_up_the_listener() -> None:
    clients, worker = Clients(), Worker()
    listener = make(clients, worker)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(listener._connection)
            await subscribed(clients)
            await until(lambda: listener.state == "subscribed")
            clients.last.hang_on_close = True
            clients.last.is_connected = False
    assert listener.state == "down"


class Ceilings:
    """The listener's random source: records each wait's ceiling and waits not at all."""

    def __init__(self) -> None:
        self.asked: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.asked.append((low, high))
        return 0.0


async def test_connections_failing_in_a_row_wait_longer_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    ceilings = Ceilings()
    monkeypatch.setattr(listener_module, "random", ceilings)
    clients, worker = Clients(refuse=6), Worker()
    listener = make(clients, worker)
    async with anyio.create_task_group() as group:
        group.start_soon(listener.run)
        await until(lambda: len(clients.made) == 7)
        await subscribed(clients)
        group.cancel_scope.cancel()
    assert ceilings.asked == [(0, 1.0), (0, 2.0), (0, 4.0), (0, 8.0), (0, 10.0), (0, 10.0)]


def test_hearing_all_the_server_filters_up_to_a_hundred_types() -> None:
    assert insert_filter([f"t{i}" for i in range(100)]) == {
        "filter": f"job_type=in.({','.join(f't{i}' for i in range(100))})"
    }
    assert insert_filter([f"t{i}" for i in range(101)]) == {}  # over the `in` filter's limit
