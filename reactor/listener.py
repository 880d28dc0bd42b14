"""The Realtime listener: hears the jobs the database names this worker for, and the worker's probes.

Each worker hears only the rows that name it in `locked_by` (sql/migrations/0010): a job handed
to it on insert (0007), which it starts with no claim request; a pending job it is the herald of,
which it claims, or sets a timer for when it is scheduled; its own probe rows; and the signal rows
that cancel one of its running jobs (0013), whose handler it stops. The database broadcasts each
such row to the worker's own private topic (0022, Broadcast from Database): a job costs one
Realtime message however many workers run, the message is streamed rather than polled on hosted
Supabase, and a worker that rejoins after a drop asks for the messages it missed (replay).

Realtime is a hint, never the source of truth: delivery is at most once, and replay keeps only a
few messages. The official client reports SUBSCRIBED before messages flow, never reads heartbeat
replies and gives up after five failed reconnects, so this module keeps its own supervisor: it runs
the client with its reconnect switched off, builds a fresh connection after any failure with
backoff and full jitter, forever, and claims after every subscribe and once Realtime says its
replication connection is established, since rows committed before that are never delivered. A
probe checks end to end that messages still flow: when nothing has arrived for a while the next
tick inserts a row that only this worker hears, and a feed that stays silent is treated as down.
With hand-offs off, the worker hears every insert of its types as postgres_changes as well.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
from loguru import logger
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from reactor import rows
from reactor.feed import Feed

PROBE_JOB_TYPE = "reactor.probe"  # reactor.probe_job_type() (tests/contract/test_constants.py)
_PLAIN_VALUE = re.compile(r"^[^,()\"\\\s]+$")  # usable unquoted in a classic `in.(...)` filter
_SUBSCRIBE_TIMEOUT = 15.0
_PROBE_WAIT = 5.0  # a probe's event arrives in milliseconds; five seconds is a silent feed
ANNOUNCED = "job"  # the event of the database's announcements (reactor.announce)
REPLICATION_READY = "Replication connection established"
REPLAY_LIMIT = 25  # the most messages Realtime replays to a join


class Timers(Protocol):
    """What the listener asks of the poller."""

    def schedule(self, table: str, at: datetime) -> None: ...

    def tick_now(self) -> None: ...

    def health_changed(self) -> None: ...


def realtime_client(url: str, key: str) -> AsyncRealtimeClient:
    """The official client, with its own reconnect off: the listener supervises the connection."""
    return AsyncRealtimeClient(url, token=key, auto_reconnect=False, max_retries=1)


class Reconnects:
    """How long to wait before the next connection: full jitter under a ceiling that starts at one
    second and doubles with each failure in a row up to ten; a connection that lived a minute was
    not part of an outage, so the count starts over after it."""

    def __init__(self) -> None:
        self._failures = 0

    def delay(self, lived: float) -> float:
        """The wait after a connection that lasted `lived` seconds ended."""
        if lived > 60:
            self._failures = 0
        self._failures += 1
        return random.uniform(0, min(10.0, 0.5 * 2 ** min(self._failures, 10)))


class Listener:
    def __init__(
        self,
        supabase_url: str,
        service_key: str,
        job_types: dict[str, list[str]],
        worker_id: str,
        feed: Feed,
        wake: Callable[[str | None], None],
        timers: Timers,
        probe_seconds: float,
        handed: Callable[[str, dict[str, Any]], None],
        events: Counter[str],
        topic: Callable[[], Awaitable[str]],
        hear_all: bool = False,
        cancel: Callable[[str, int], None] = lambda table, job_id: None,
        client: Callable[[str, str], Any] = realtime_client,
    ) -> None:
        self._url = re.sub(r"^http", "ws", supabase_url) + "/realtime/v1"
        self._key = service_key
        self._job_types = job_types  # table -> the job types this worker handles there
        self._worker_id = worker_id
        self._feed = feed  # what this listener learns about the feed, for the other parts to read
        self._wake = wake
        self._timers = timers
        self._probe_seconds = probe_seconds
        self._handed = handed  # a job the database handed to this worker on insert
        self.last_event = time.monotonic()
        self.went_down_at: float | None = None
        self._events = events  # Metrics.events: subscribes, feeds gone live, probes heard
        self._topic = topic  # asks the database for this worker's private topic
        # With hand-offs off the worker never stands by, so no row names it: it hears every insert
        # of its types instead, at one message per worker per job.
        self._hear_all = hear_all
        self._cancel = cancel  # a running job was cancelled (sql/migrations/0013): stop its handler
        self._client = client  # builds a Realtime client for the URL and key (tests pass their own)
        self._broken = anyio.Event()
        self._probe_table = next(iter(job_types))
        self._probe_seen = anyio.Event()
        self._lost_at: float | None = None  # when the last connection ended, in epoch seconds
        # Hand-offs heard lately, (table, id) -> when: a replay repeats the messages of the second
        # before a drop, and a hand-off already started must not start again.
        self._handed_lately: dict[tuple[str, Any], float] = {}

    @property
    def state(self) -> str:
        return self._feed.state

    def healthy(self) -> bool:
        return self._feed.healthy()

    async def run(self) -> None:
        reconnects = Reconnects()
        while True:
            started = time.monotonic()
            await self._connection()
            delay = reconnects.delay(time.monotonic() - started)
            logger.info(f"Realtime reconnecting in {delay:.1f} s")
            await anyio.sleep(delay)

    async def _connection(self) -> None:
        self._broken = anyio.Event()
        self._feed.connection_lost()
        client = self._client(self._url, self._key)
        try:
            topic = await self._topic()
            await client.connect()
            await self._subscribe_all(client, topic)
            self._set_state("subscribed")
            self._events["realtime_subscriptions"] += 1
            self.last_event = time.monotonic()
            self._wake(None)  # changes committed before the subscription were never sent
            async with anyio.create_task_group() as group:
                group.start_soon(self._probe)
                await self._watch(client)
                group.cancel_scope.cancel()
        except Exception as exc:
            logger.warning(f"Realtime unavailable: {type(exc).__name__}: {exc}; ticking fast")
        finally:
            self._set_state("down")
            self._lost_at = time.time()
            self._wake(None)
            with anyio.move_on_after(2, shield=True):
                await client.close()

    async def _watch(self, client: Any) -> None:
        """Return when the connection fails: a channel error, a closed socket or a silent feed."""
        while not self._broken.is_set():
            with anyio.move_on_after(0.25):
                await self._broken.wait()
            if not client.is_connected:
                logger.warning("Realtime socket closed")
                return

    async def _subscribe_all(self, client: Any, topic: str) -> None:
        """Join the worker's private topic (and, hearing all, one channel a table for its inserts)
        and return once every join is answered."""
        subscribed: list[str] = []
        done = anyio.Event()
        per_table = [f"reactor:{t}:{self._worker_id}" for t in self._job_types] if self._hear_all else []
        channels = [topic, *per_table]

        def on_state(name: str) -> Callable[[RealtimeSubscribeStates, Exception | None], None]:
            def changed(state: RealtimeSubscribeStates, error: Exception | None) -> None:
                if state == RealtimeSubscribeStates.SUBSCRIBED:
                    subscribed.append(name)
                    if len(subscribed) == len(channels):
                        done.set()
                    return
                logger.warning(f"Realtime channel {name}: {state.value} {error or ''}")
                self._broken.set()
                done.set()

            return changed

        announcements = client.channel(topic, {"config": self._join_config()})
        announcements.on_broadcast(ANNOUNCED, self.announced)
        announcements.on_system(self._on_replication)
        await announcements.subscribe(on_state(topic))
        if self._hear_all:
            for table, name in zip(self._job_types, per_table, strict=True):
                channel = client.channel(name, {"config": {"private": True}})
                binding = insert_filter(self._job_types[table])
                channel.on_postgres_changes("INSERT", self.heard, table=table, schema="public", **binding)
                channel.on_system(self._on_changes(table))
                await channel.subscribe(on_state(name))
        with anyio.fail_after(_SUBSCRIBE_TIMEOUT):
            await done.wait()
        if self._broken.is_set():
            raise ConnectionError("a channel failed to subscribe")

    def _join_config(self) -> dict[str, Any]:
        """A private channel (the service key may join any; projects may allow no other kind), told
        when Broadcast from Database is live, and after a drop asking for what it missed."""
        broadcast: dict[str, Any] = {"ack": False, "self": False, "replication_ready": True}
        if self._lost_at is not None:
            broadcast["replay"] = {"since": int((self._lost_at - 1) * 1000), "limit": REPLAY_LIMIT}
        return {"broadcast": broadcast, "presence": {"key": "", "enabled": False}, "private": True}

    def _on_replication(self, message: Any) -> None:
        if getattr(message, "message", "") == REPLICATION_READY:
            logger.info("Realtime live")
            self._events["realtime_live"] += 1
            for table in self._job_types:
                self._feed.went_live(table)
            self._wake(None)  # rows committed before replication was live were never sent

    def _on_changes(self, table: str) -> Callable[[Any], None]:
        def system(message: Any) -> None:
            if getattr(message, "message", "") == "Subscribed to PostgreSQL":
                logger.info(f"Realtime changes live for table {table}")
                self._wake(table)

        return system

    def announced(self, message: dict[str, Any]) -> None:
        """The database named this worker in a row (reactor.announce). A replayed one is acted on
        only when it still can be: a hand-off whose lease runs, a cancel signal, a herald's job."""
        body = message.get("payload")
        if message.get("event") != ANNOUNCED or not isinstance(body, dict):
            return
        record, table = body.get("record"), body.get("table")
        if not isinstance(record, dict) or record.get("locked_by") != self._worker_id:
            return
        replayed = bool((message.get("meta") or {}).get("replayed"))
        if replayed and not _still_useful(record):
            return
        if record.get("status") == "processing" and not self._first_hearing(table, record.get("id")):
            return
        self.heard({"data": {"type": "INSERT", "table": table, "record": record}}, replayed=replayed)

    def _first_hearing(self, table: Any, job_id: Any) -> bool:
        """Whether this hand-off was not heard within the last minute (far past its 5 s lease)."""
        now = time.monotonic()
        while self._handed_lately:  # oldest first: insertion order is time order
            oldest, heard_at = next(iter(self._handed_lately.items()))
            if now - heard_at < 60:
                break
            del self._handed_lately[oldest]
        if (table, job_id) in self._handed_lately:
            return False
        self._handed_lately[(table, job_id)] = now
        return True

    def heard(self, payload: dict[str, Any], replayed: bool = False) -> None:
        """An insert naming this worker arrived (or, hearing all, any insert of its types): start a
        hand-off, claim or set a timer for a pending job, or note a probe. A replayed row says
        nothing of whether messages flow now."""
        if not replayed:
            self.last_event = time.monotonic()
        data = payload.get("data", {})
        record, table = data.get("record") or {}, data.get("table")
        named = record.get("locked_by") == self._worker_id
        if data.get("type") != "INSERT" or not (named or self._hear_all):
            return
        if record.get("job_type") == PROBE_JOB_TYPE:
            if named:
                if not replayed:
                    self._probe_seen.set()
                signal = record.get("payload")  # a probe, or a cancel signal naming a job
                if isinstance(signal, dict) and isinstance(signal.get("cancel"), int):
                    self._cancel(table, signal["cancel"])
            return
        if record.get("job_type") not in self._job_types.get(table, ()):
            return
        if record.get("status") == "processing":
            if named:
                self._handed(table, record)
        elif record.get("status") == "pending":
            run_at = rows.timestamp(record.get("run_at"))
            if run_at is not None and run_at > datetime.now(UTC):
                self._timers.schedule(table, run_at)
            else:
                self._wake(table)

    async def _probe(self) -> None:
        """Once the feed has been quiet for the probe period less a short wait, have the next tick
        insert a probe row, and expect its event within that wait: a silent feed is found within
        one probe period, and an idle worker's probes cost no requests of their own."""
        wait = min(_PROBE_WAIT, self._probe_seconds / 3)
        idle = self._probe_seconds - wait
        while True:
            await anyio.sleep(max(0.0, self.last_event + idle - time.monotonic()))
            if time.monotonic() - self.last_event < idle:
                continue
            self._probe_seen = anyio.Event()
            sent = self._feed.want_probe(self._probe_table)
            self._timers.tick_now()
            with anyio.move_on_after(wait):
                await sent.wait()
            if not sent.is_set():
                self._feed.forget_probe()
                logger.warning(f"Realtime probe not sent: no tick got through within {wait:g} s")
                self.last_event = time.monotonic()
                continue
            with anyio.move_on_after(wait):
                await self._probe_seen.wait()
            if self._probe_seen.is_set():
                self._events["realtime_probes_heard"] += 1
            else:
                logger.warning("Realtime feed is silent: the probe event never arrived; reconnecting")
                self._broken.set()
                return

    def _set_state(self, state: str) -> None:
        if state == self._feed.state:
            return
        self._feed.state = state
        if state == "down":
            self.went_down_at = time.monotonic()
        logger.info(f"Realtime {state}")
        self._timers.health_changed()


def _still_useful(record: dict[str, Any]) -> bool:
    """Whether a replayed announcement can still be acted on: a probe is stale (unless it is a
    cancel signal), and a hand-off whose lease ran out is the reaper's and the next claim's."""
    if record.get("job_type") == PROBE_JOB_TYPE:
        signal = record.get("payload")
        return isinstance(signal, dict) and isinstance(signal.get("cancel"), int)
    if record.get("status") == "processing":
        ends = rows.timestamp(record.get("lease_expires_at"))
        return ends is not None and ends > datetime.now(UTC)
    return True


def insert_filter(job_types: list[str]) -> dict[str, str]:
    """Narrow inserts to these job types on the server, when the classic `in` filter can say so."""
    types = list(job_types)
    if len(types) > 100 or not all(_PLAIN_VALUE.match(t) for t in types):
        return {}
    return {"filter": f"job_type=in.({','.join(types)})"}
