"""The local stack's Realtime: `/realtime/v1/websocket` with postgres_changes, Broadcast (from
clients, from the database and from the REST API) and Presence.

The gateway hands websocket requests to `Realtime.handle` and the REST broadcast API to
broadcast_api.py. Broadcasts committed in the database (database_broadcast.py) go to the topic's
subscribers as a stored message, with its id as `meta.id`. Changes come from changes.py as they
commit; each goes straight to every live channel whose bindings match it (schema, table, event,
filters), trimmed to what the subscriber's role and claims may select, in the exact payload
shape of Supabase Realtime's postgres_changes.

Under the hosted profile (docs/hosted-supabase.md) changes are instead queued and taken by a
poll loop, as Realtime's ReplicationPoller takes them from its replication slot: at most
`changes_per_poll` a poll, polls spaced `poll_busy_seconds` while they find changes and
`poll_idle_seconds` after one found none. Every push counts towards the project's message quota
(a RateCounter averaging 5 s buckets over 60 s); while its limit is triggered, each polled batch
is dropped whole and silently. Joins and connections meet the project's limits (socket.py's
`Limits`), and every frame is held half the profile's round trip each way.

Broadcast meets the same limit on a second counter, as Realtime's channel events have their own
(`Tenants.events_per_second_rate`): each broadcast sent counts once and each delivery to a
subscriber once more; once the limit is triggered, a channel that receives a broadcast is shut
with "Too many messages per second", broadcasts from the database are dropped, and the REST API
answers 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web
from loguru import logger

from reactor.devstack.faults import Faults
from reactor.devstack.keys import Keys, TokenError
from reactor.devstack.profile import Profile
from reactor.devstack.realtime import changes, phoenix
from reactor.devstack.realtime.access import (
    MAX_RECORD_BYTES,
    Access,
    RoleView,
    Table,
    change_data,
    filter_values,
)
from reactor.devstack.realtime.broadcast_api import BroadcastApi
from reactor.devstack.realtime.changes import Change, ChangeFeed
from reactor.devstack.realtime.database_broadcast import Message, MessageFeed
from reactor.devstack.realtime.filters import Binding, Condition
from reactor.devstack.realtime.hub import Hub, Member, UserBroadcast
from reactor.devstack.realtime.socket import Channel, Limits, RateCounter, Socket

MAX_FRAME_BYTES = 5_000_000  # Realtime's inbound websocket max_frame_size
RATE_TICK_SECONDS = 5.0  # Tenants.db_events_per_second_rate and joins_per_second_rate: tick 5 s,
RATE_BUCKETS = 12  # max_bucket_len 12: the average is over the last 60 s

Push = tuple[Socket, Channel, dict[str, Any]]


@dataclass
class Counters:
    """What the Realtime half did, for tests and benchmarks (`stack.realtime.counters`)."""

    delivered: int = 0  # postgres_changes pushes sent, to every subscriber together
    by_topic: Counter[str] = field(default_factory=Counter)  # the same, by channel topic
    dropped: int = 0  # changes dropped whole because the message quota was reached
    quota_reached: int = 0  # times the message quota's limit triggered
    broadcasts: int = 0  # broadcasts delivered, to every subscriber together
    broadcasts_dropped: int = 0  # broadcasts from the database dropped by the message quota
    broadcast_quota_reached: int = 0  # times the channel events' limit triggered
    shut_by_quota: int = 0  # channels shut with "Too many messages per second"
    polls: int = 0  # hosted: polls run
    polled: int = 0  # hosted: changes taken by polls
    max_batch: int = 0  # hosted: most changes one poll took
    waiting: int = 0  # hosted: changes captured and not yet taken by a poll
    lag_max: float = 0.0  # hosted: longest a change waited for the poll that took it, seconds
    lag_total: float = 0.0
    _waiters: set[asyncio.Event] = field(default_factory=set, repr=False)

    @property
    def messages(self) -> int:
        """Every message delivered that the hosted service counts and bills: changes and
        broadcasts, a copy to each subscriber."""
        return self.delivered + self.broadcasts

    @property
    def lag_mean(self) -> float:
        return self.lag_total / self.polled if self.polled else 0.0

    def changed(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    async def until(self, predicate: Callable[[Counters], bool], timeout: float = 30.0) -> None:
        """Wait until `predicate(counters)` holds (checked whenever the counters change)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                waiter = asyncio.Event()
                self._waiters.add(waiter)
                try:
                    await waiter.wait()
                finally:
                    self._waiters.discard(waiter)


class Realtime:
    """Realtime's websocket endpoint and change fan-out, for the gateway to mount."""

    def __init__(
        self, pool: asyncpg.Pool, database_url: str, keys: Keys, faults: Faults, profile: Profile
    ) -> None:
        self._pool = pool
        self._profile = profile
        self._keys = keys
        self._faults = faults
        self._access = Access(pool)
        self._feed = ChangeFeed(pool, database_url, self._changed, self._synced)
        # This gateway's rows in _realtime.wanted: what the capture triggers must not skip.
        self._gateway = random.getrandbits(62)
        self._wanting = asyncio.Lock()
        # Each change is prepared (filters, RLS checks) as soon as it arrives, concurrently with
        # the ones before it; the dispatcher sends the results strictly in commit order.
        self._prepared: asyncio.Queue[asyncio.Task[list[Push]]] = asyncio.Queue()
        self._queued = 0  # changes in that queue or being delivered from it
        self._sockets: set[Socket] = set()
        self.hub = Hub(self._metered)  # broadcast and presence, shared by every socket
        self._messages = MessageFeed(pool, database_url, self._stored_broadcast)
        self._rewrites: set[asyncio.Task[None]] = set()  # of the wanted rows, after a socket closed
        self._dispatcher: asyncio.Task[None] | None = None
        self.counters = Counters()
        self._record_bytes = profile.max_record_bytes or MAX_RECORD_BYTES
        # Hosted: changes wait here, (arrival, change), for the poll loop.
        self._polled = profile.poll_busy_seconds is not None
        self._backlog: deque[tuple[float, Change]] = deque()
        self.message_rate = (
            RateCounter(
                profile.messages_per_second,
                tick_seconds=RATE_TICK_SECONDS,
                max_buckets=RATE_BUCKETS,
                on_trigger=self._quota_reached,
            )
            if profile.messages_per_second is not None
            else None
        )
        # Realtime's channel events counter (broadcast), apart from the postgres changes one above.
        self.event_rate = (
            RateCounter(
                profile.messages_per_second,
                tick_seconds=RATE_TICK_SECONDS,
                max_buckets=RATE_BUCKETS,
                on_trigger=self._event_quota_reached,
            )
            if profile.messages_per_second is not None
            else None
        )
        self.broadcast_api = BroadcastApi(pool, keys, self.hub, self.event_rate, self._count_event)
        self.join_rate = (
            RateCounter(
                profile.joins_per_second,
                tick_seconds=RATE_TICK_SECONDS,
                max_buckets=RATE_BUCKETS,
                on_trigger=lambda: logger.critical("ClientJoinRateLimitReached: Too many joins per second"),
            )
            if profile.joins_per_second is not None
            else None
        )
        limited = (profile.max_connections, profile.channels_per_connection, self.join_rate)
        self._limits = (
            Limits(
                self.join_rate, profile.max_connections, profile.channels_per_connection, profile.private_only
            )
            if profile.private_only or any(x is not None for x in limited)
            else None
        )
        self._delay = profile.round_trip_ms / 2000 if profile.round_trip_ms else 0.0
        self._loops: list[asyncio.Task[None]] = []  # the poll loop and the rate counters' ticks

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        router.add_get(prefix + "/websocket", self.handle)
        self.broadcast_api.add_routes(router, prefix)

    async def start(self) -> None:
        await self._feed.start()
        await self._messages.start()
        self._dispatcher = asyncio.create_task(self._dispatch())
        if self._polled:
            self._loops.append(asyncio.create_task(self._poll()))
        if self.message_rate is not None or self.join_rate is not None or self.event_rate is not None:
            self._loops.append(asyncio.create_task(self._tick()))

    def _count_event(self) -> None:
        if self.event_rate is not None:
            self.event_rate.add()

    def _metered(self, member: Member, join_topic: str) -> None:
        """A broadcast delivered: counted, and while the quota is reached the channel shuts."""
        self.counters.broadcasts += 1
        if self.event_rate is None:
            return
        self.event_rate.add()
        if self.event_rate.triggered:
            self.counters.shut_by_quota += 1
            member.shutdown(join_topic, "Too many messages per second")

    def _stored_broadcast(self, message: Message) -> None:
        """A broadcast committed in realtime.messages, to the topic's subscribers."""
        if self.event_rate is not None and self.event_rate.triggered:
            self.counters.broadcasts_dropped += 1
            return
        if self._faults.replication_down() or self._faults.event_suppressed():
            return  # not read from the database, a silent feed, or a dropped event
        self._count_event()
        broadcast = UserBroadcast(message.event, message.payload, json_payload=True, meta={"id": message.id})
        self.hub.broadcast(None, message.topic, message.private, broadcast, True)

    def _event_quota_reached(self) -> None:
        logger.error("MessagePerSecondRateLimitReached: Too many messages per second")
        self.counters.broadcast_quota_reached += 1

    def _quota_reached(self) -> None:
        logger.error("MessagePerSecondRateLimitReached: Too many postgres changes messages per second")
        self.counters.quota_reached += 1

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(RATE_TICK_SECONDS)
            now = time.monotonic()
            if self.message_rate is not None:
                self.message_rate.tick(self._faults.extra_messages(last, now))
            if self.join_rate is not None:
                self.join_rate.tick()
            if self.event_rate is not None:
                self.event_rate.tick(self._faults.extra_broadcasts(last, now))
            last = now
            self.counters.changed()

    async def _poll(self) -> None:
        """ReplicationPoller's loop: take at most `changes_per_poll` in commit order; while the
        message quota is reached, drop what was taken; else prepare and deliver it in order."""
        busy = self._profile.poll_busy_seconds or 0.0
        idle = self._profile.poll_idle_seconds if self._profile.poll_idle_seconds is not None else busy
        per_poll = self._profile.changes_per_poll
        while True:
            take = len(self._backlog) if per_poll is None else min(len(self._backlog), per_poll)
            batch = [self._backlog.popleft() for _ in range(take)]
            now = time.monotonic()
            self.counters.polls += 1
            self.counters.waiting = len(self._backlog)
            if batch:
                self.counters.polled += len(batch)
                self.counters.max_batch = max(self.counters.max_batch, len(batch))
                for arrived, _ in batch:
                    self.counters.lag_max = max(self.counters.lag_max, now - arrived)
                    self.counters.lag_total += now - arrived
                if self.message_rate is not None and self.message_rate.triggered:
                    self.counters.dropped += len(batch)
                else:
                    await self._deliver_batch([c for _, c in batch])
                self.counters.changed()
            await asyncio.sleep(busy if batch else idle)

    async def _deliver_batch(self, batch: list[Change]) -> None:
        tasks = [asyncio.create_task(self._prepare(change)) for change in batch]
        try:
            for task in tasks:
                try:
                    self._deliver(await task)
                except Exception:
                    logger.exception("realtime: a change could not be delivered")
        finally:
            for task in tasks:
                task.cancel()

    async def stop(self) -> None:
        await self.close_sockets(1001)
        # Let the rewrites finish rather than cancel them: one cancelled while its pool opens a
        # connection leaves that connection to fail later, outside any task.
        if self._rewrites:
            await asyncio.wait(list(self._rewrites), timeout=5)
        for rewrite in list(self._rewrites):
            rewrite.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rewrite
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await changes.want(self._pool, self._gateway, [])
        await self._feed.stop()
        await self._messages.stop()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for loop in self._loops:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        while not self._prepared.empty():
            self._prepared.get_nowait().cancel()

    async def close_sockets(self, code: int) -> None:
        """Close every socket: cleanly with `code`, or with 1006 abort the TCP connection."""
        for socket in list(self._sockets):
            if code == 1006:
                if socket.request.transport is not None:
                    socket.request.transport.abort()
            else:
                await socket.ws.close(code=code)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._faults.websockets_refused():
            return web.Response(status=503)
        vsn = request.query.get("vsn", "1.0.0")
        if vsn not in phoenix.VERSIONS:
            return web.Response(status=403)  # Phoenix: no serializer for the requested version
        token = request.headers.get("x-api-key") or request.query.get("apikey")
        try:
            self._keys.claims(token)
        except TokenError as exc:
            # As Realtime's socket error handler answers: compact JSON, {"error": message}.
            body = json.dumps({"error": str(exc)}, separators=(",", ":"))
            return web.Response(status=exc.status, text=body, content_type="application/json")
        refused = self._limits.connect_refusal() if self._limits is not None else None
        if refused is not None:  # UserSocket.connect/3 → TenantRateLimiters.check_tenant/1
            body = json.dumps({"error": refused}, separators=(",", ":"))
            return web.Response(status=429, text=body, content_type="application/json")
        # Realtime's endpoint leaves Phoenix's `compress` off, so the client's permessage-deflate
        # offer is declined and frames travel uncompressed (docs/benchmarks.md).
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, compress=False)
        await ws.prepare(request)
        socket = Socket(
            ws,
            request,
            vsn,
            token,
            self._keys,
            self._access,
            self._resync,
            self.want,
            self._limits,
            self._delay,
            self.hub,
            self._pool,
            self._count_event,
            lambda: self._messages.reading and not self._faults.replication_down(),
        )
        self._sockets.add(socket)
        try:
            await socket.run()
        finally:
            self._sockets.discard(socket)
            # Stop capturing what only this socket wanted now, not at the next sync (otherwise a
            # bulk insert just after a worker left sends every row to nobody), without holding up
            # the handler: a closing gateway must not wait on the database for it.
            rewrite = asyncio.create_task(self._want_quietly())
            self._rewrites.add(rewrite)
            rewrite.add_done_callback(self._rewrites.discard)
        return ws

    async def _want_quietly(self) -> None:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self.want()

    async def _resync(self) -> None:
        """Before a join goes live: capture any table newly added to the publication."""
        await changes.sync(self._pool)
        self._access.forget()

    async def want(self) -> None:
        """Tell the capture triggers what this gateway's live bindings can receive; a subscription
        is live only once this returned. Serialized, so the last write has the latest state."""
        async with self._wanting:
            rows = []
            for socket in self._sockets:
                for channel in socket.channels.values():
                    for _, binding, relids in channel.bindings:
                        cond = next(
                            (c for c in binding.conditions if c.op in ("eq", "in") and not c.negate), None
                        )
                        narrow = {"col": cond.column, "op": cond.op, "value": cond.value} if cond else {}
                        rows += [{"relid": r, "event": binding.event, **narrow} for r in relids]
            await changes.want(self._pool, self._gateway, rows)

    async def _synced(self) -> None:
        """Every couple of seconds: catalog facts may have changed, and the wanted rows are
        rewritten (which drops those of channels that left and keeps them from expiring)."""
        self._access.forget()
        try:
            await self.want()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("realtime: could not refresh the wanted changes: {}", exc)

    def _changed(self, change: Change) -> None:
        if self._polled:
            self._backlog.append((time.monotonic(), change))
            self.counters.waiting = len(self._backlog)
            self.counters.changed()
            return
        # With nothing queued ahead, a change whose facts are all cached (table, filters decided
        # in Python, no RLS check) goes out at once; anything else waits its turn in the queue.
        if not self._queued:
            try:
                pushes = self._prepare_now(change)
            except Exception:
                pushes = None  # the queued path fails the same way and logs it
            if pushes is not None:
                self._deliver(pushes)
                return
        self._queued += 1
        self._prepared.put_nowait(asyncio.create_task(self._prepare(change)))

    async def _dispatch(self) -> None:
        while True:
            prepared = await self._prepared.get()
            try:
                self._deliver(await prepared)
            except Exception:
                # One bad change must not stop the feed for every later one.
                logger.exception("realtime: a change could not be delivered")
            finally:
                self._queued -= 1

    def _deliver(self, pushes: list[Push]) -> None:
        for socket, channel, payload in pushes:
            left = socket.channels.get(channel.topic) is not channel  # while it was prepared
            if not left and not self._faults.event_suppressed():
                socket.send(phoenix.Frame(channel.topic, "postgres_changes", payload))
                socket.delivered += 1
                self.counters.delivered += 1
                self.counters.by_topic[channel.topic] += 1
                if self.message_rate is not None:
                    self.message_rate.add()

    def _targets(self, change: Change) -> list[tuple[Socket, Channel, list[tuple[int, Binding]]]]:
        return [
            (socket, channel, matched)
            for socket in self._sockets
            for channel in socket.channels.values()
            if channel.active and (matched := _matching(channel, change))
        ]

    def _prepare_now(self, change: Change) -> list[Push] | None:
        """`_prepare` from cached facts alone, or None when it needs the database."""
        targets = self._targets(change)
        if not targets:
            return []
        known, table = self._access.cached_table(change.relid)
        if not known:
            return None
        if table is None:
            return []
        held = self._held_in_python(table, change, [b for _, _, m in targets for _, b in m])
        if None in held.values():
            return None
        pushes = []
        for socket, channel, matched in targets:
            ids = sorted({i for i, b in matched if all(held[c] for c in b.conditions)})
            if not ids:
                continue
            view = self._access.cached_role_view(change.relid, str(channel.claims.get("role", "")))
            if view is None or _rls_checked(table, view, change):
                return None
            pushes.append(
                (socket, channel, {"ids": ids, "data": change_data(table, view, change, self._record_bytes)})
            )
        return pushes

    async def _prepare(self, change: Change) -> list[Push]:
        """The pushes a change makes: one per live channel with a matching, visible binding."""
        targets = self._targets(change)
        table = await self._access.table(change.relid) if targets else None
        if table is None:
            return []
        passed = await self._filters_pass(table, change, [b for _, _, m in targets for _, b in m])
        delivered = [(s, c, ids) for s, c, m in targets if (ids := sorted({i for i, b in m if passed[b]}))]
        # One visibility check per distinct set of claims, run side by side.
        claims = {_claims_key(c): c.claims for _, c, _ in delivered}
        found = await asyncio.gather(*(self._data_for(table, change, c) for c in claims.values()))
        payloads = dict(zip(claims, found, strict=True))
        return [
            (socket, channel, {"ids": ids, "data": data})
            for socket, channel, ids in delivered
            if (data := payloads[_claims_key(channel)]) is not None
        ]

    async def _filters_pass(
        self, table: Table, change: Change, bindings: list[Binding]
    ) -> dict[Binding, bool]:
        held = self._held_in_python(table, change, bindings)
        asked = [c for c, h in held.items() if h is None]
        if asked:
            values = filter_values(table, change)
            answers = await self._access.conditions_hold(change.relid, values, asked)
            held.update(zip(asked, answers, strict=True))
        return {b: all(held[c] for c in b.conditions) for b in bindings}

    def _held_in_python(
        self, table: Table, change: Change, bindings: list[Binding]
    ) -> dict[Condition, bool | None]:
        """Each distinct condition of `bindings`, decided without a round trip where that is
        exact; None where Postgres must decide."""
        values = filter_values(table, change)
        conds = dict.fromkeys(c for b in bindings for c in b.conditions)
        return {c: self._access.held_in_python(table, values, c) for c in conds}

    async def _data_for(self, table: Table, change: Change, claims: dict[str, Any]) -> dict[str, Any] | None:
        """What a subscriber with `claims` receives, or None when RLS hides the row from it."""
        view = await self._access.role_view(change.relid, str(claims.get("role", "")))
        if _rls_checked(table, view, change) and not await self._access.visible(
            change.relid, table, claims, change.record or {}
        ):
            return None
        return change_data(table, view, change, self._record_bytes)


def _rls_checked(table: Table, view: RoleView, change: Change) -> bool:
    """Whether the row must pass the subscriber's RLS check. Rows Realtime answers with an error
    (no primary key, or one the role may not select) skip it, as in apply_rls; so do DELETEs."""
    readable = bool(table.pkey) and set(table.pkey) <= view.selectable
    return readable and table.rls and not view.bypass_rls and change.type != "DELETE"


def _matching(channel: Channel, change: Change) -> list[tuple[int, Binding]]:
    return [
        (binding_id, binding)
        for binding_id, binding, relids in channel.bindings
        if change.relid in relids and binding.event in ("*", change.type)
    ]


def _claims_key(channel: Channel) -> str:
    return json.dumps(channel.claims, sort_keys=True)
