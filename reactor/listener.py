"""The Realtime listener: hears the jobs the database names this worker for, and the worker's probes.

Each worker hears only the rows that name it in `locked_by` (sql/migrations/0010): a job handed
to it on insert (0007), which it starts with no claim request; a pending job it is the herald of,
which it claims, or sets a timer for when it is scheduled; its own probe rows; and the signal rows
that cancel one of its running jobs (0013), whose handler it stops. A job costs one
Realtime message however many workers run.

Realtime is a hint, never the source of truth: Supabase promises at-most-once delivery and no
replay, and a change made while a socket is down is never sent. The official client reports
SUBSCRIBED before changes flow, never reads heartbeat replies and gives up after five failed
reconnects, so this module keeps its own supervisor: it runs the client with its reconnect switched
off, builds a fresh connection after any failure with backoff and full jitter, forever, and claims
after every subscribe and after "Subscribed to PostgreSQL", since changes committed before
that message are never delivered. A probe checks end to end that events still flow: when nothing has
arrived for a while the next tick inserts a row that only this worker hears, and a feed that stays
silent is treated as down.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
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
        # With hand-offs off the worker never stands by, so no row names it: it hears every insert
        # of its types instead, at one message per worker per job.
        self._hear_all = hear_all
        self._cancel = cancel  # a running job was cancelled (sql/migrations/0013): stop its handler
        self._client = client  # builds a Realtime client for the URL and key (tests pass their own)
        self._broken = anyio.Event()
        self._probe_table = next(iter(job_types))
        self._probe_seen = anyio.Event()

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
            await client.connect()
            await self._subscribe_all(client)
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

    async def _subscribe_all(self, client: Any) -> None:
        subscribed: list[str] = []
        done = anyio.Event()
        tables = list(self._job_types)

        def on_state(table: str) -> Callable[[RealtimeSubscribeStates, Exception | None], None]:
            def changed(state: RealtimeSubscribeStates, error: Exception | None) -> None:
                if state == RealtimeSubscribeStates.SUBSCRIBED:
                    subscribed.append(table)
                    if len(subscribed) == len(tables):
                        done.set()
                    return
                logger.warning(f"Realtime channel for {table}: {state.value} {error or ''}")
                self._broken.set()
                done.set()

            return changed

        for table in tables:
            channel = client.channel(f"reactor:{table}:{self._worker_id}")
            named = {"filter": f"locked_by=eq.{self._worker_id}"}
            binding = insert_filter(self._job_types[table]) if self._hear_all else named
            channel.on_postgres_changes("INSERT", self.heard, table=table, schema="public", **binding)
            channel.on_system(self._on_system(table))
            await channel.subscribe(on_state(table))
        with anyio.fail_after(_SUBSCRIBE_TIMEOUT):
            await done.wait()
        if self._broken.is_set():
            raise ConnectionError("a channel failed to subscribe")

    def _on_system(self, table: str) -> Callable[[Any], None]:
        def system(message: Any) -> None:
            if getattr(message, "message", "") == "Subscribed to PostgreSQL":
                logger.info(f"Realtime live for table {table}")
                self._events["realtime_live"] += 1
                self._feed.went_live(table)
                self._wake(table)

        return system

    def heard(self, payload: dict[str, Any]) -> None:
        """An insert naming this worker arrived (or, hearing all, any insert of its types): start a
        hand-off, claim or set a timer for a pending job, or note a probe."""
        self.last_event = time.monotonic()
        data = payload.get("data", {})
        record, table = data.get("record") or {}, data.get("table")
        named = record.get("locked_by") == self._worker_id
        if data.get("type") != "INSERT" or not (named or self._hear_all):
            return
        if record.get("job_type") == PROBE_JOB_TYPE:
            if named:
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


def insert_filter(job_types: list[str]) -> dict[str, str]:
    """Narrow inserts to these job types (and probes) on the server, when the classic `in` filter
    can say so."""
    types = [*job_types, PROBE_JOB_TYPE]
    if len(types) > 100 or not all(_PLAIN_VALUE.match(t) for t in types):
        return {}
    return {"filter": f"job_type=in.({','.join(types)})"}
