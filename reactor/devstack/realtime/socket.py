"""One Realtime websocket: Phoenix's socket and channel protocol as Supabase Realtime answers it.

Heartbeats on `phoenix`; `phx_join` on `realtime:<name>` with postgres_changes bindings echoed
in order with ids; the "Subscribed to PostgreSQL" system message once the subscription is live;
`phx_leave`, `access_token`; `broadcast` (acknowledged with `config.broadcast.ack`, echoed with
`self`; V2's binary user-broadcast pushes too) and `presence` track/untrack, with
`presence_state` after a join that enables presence (hub.py shares both between sockets);
unknown topics answered "unmatched topic"; a duplicate join closes the old channel after
answering the new one; an undecodable frame closes the socket with 1011, as a crashed Phoenix
socket process does.

A private channel (`config.private`) is Realtime Authorization's (authorization.py): the join is
refused unless RLS on `realtime.messages` lets the user read broadcast (or presence, when the
join enables it); its first broadcast and first track check whether it may write, and a
broadcast it may not send is dropped without a reply, a track answered with an error, as
Realtime does. A new access token evaluates the policies again and shuts the channel when it may
no longer read. Frames from one socket are handled in order, each check before the next frame.
A private join with `config.broadcast.replay` gets the topic's stored broadcasts (replay.py) right
after its reply, each a `broadcast` push with `meta.replayed`; the hub then skips those messages
if they also arrive live. On a public channel, or with a bad `since`/`limit`, the join is refused.
A join with `config.broadcast.replication_ready` gets the system message "Replication connection
established" once broadcasts from the database are being read (at once, unless the gateway's
listener is reconnecting).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import WSMsgType, web
from loguru import logger

from reactor.devstack.keys import Keys, TokenError
from reactor.devstack.realtime import authorization, phoenix, replay
from reactor.devstack.realtime.access import Access, SubscribeError
from reactor.devstack.realtime.filters import Binding, BindingError, parse_binding
from reactor.devstack.realtime.hub import Hub, UserBroadcast, decode_user_broadcast_push
from reactor.devstack.realtime.phoenix import Frame

IDLE_TIMEOUT_SECONDS = 60  # Phoenix drops a socket that sent nothing for this long
REPLICATION_READY_SECONDS = 60.0  # Realtime's replication_ready_timeout
REPLICATION_CHECK_SECONDS = 0.5  # and its check interval
NO_READ = "You do not have permissions to read from this Channel topic: "
READ_REVOKED = "You no longer have permission to read from this Channel topic: "


class RateCounter:
    """Realtime's RateCounter (lib/realtime/rate_counter/rate_counter.ex): events are counted
    between ticks; each tick pushes the count onto a list of the last `max_buckets` counts and
    sets `avg = sum(buckets) / len(buckets) / tick_seconds`, so early on the average is over fewer
    buckets. The limit triggers at a tick where avg >= limit and releases at a tick where
    avg < limit; between ticks the state stands. `on_trigger` runs once per triggering."""

    def __init__(
        self,
        limit: float,
        *,
        tick_seconds: float = 5.0,
        max_buckets: int = 12,
        on_trigger: Callable[[], None] | None = None,
    ) -> None:
        self.limit = limit
        self.tick_seconds = tick_seconds
        self.buckets: deque[float] = deque(maxlen=max_buckets)
        self.count = 0.0  # since the last tick
        self.avg = 0.0
        self.triggered = False
        self._on_trigger = on_trigger

    def add(self, n: float = 1) -> None:
        self.count += n

    def tick(self, extra: float = 0.0) -> None:
        self.buckets.appendleft(self.count + extra)
        self.count = 0.0
        self.avg = sum(self.buckets) / len(self.buckets) / self.tick_seconds
        if self.triggered:
            self.triggered = self.avg >= self.limit
        elif self.avg >= self.limit:
            self.triggered = True
            if self._on_trigger is not None:
                self._on_trigger()


@dataclass
class Limits:
    """The hosted project's join-time limits, checked as RealtimeChannel.join/3 checks them
    (lib/realtime_web/channels/realtime_channel.ex): private only, connected users, joins per
    second, channels per connection, in that order; and at the websocket upgrade as
    RealtimeWeb.TenantRateLimiters.check_tenant/1 does (users, then joins)."""

    joins: RateCounter | None = None
    max_connections: int | None = None
    channels_per_connection: int | None = None
    private_only: bool = False
    users: set[Socket] = field(default_factory=set)  # Realtime's UsersCounter: sockets that joined

    def connect_refusal(self) -> str | None:
        """The 429 body's `error` for a websocket upgrade, or None to accept it."""
        if self.max_connections is not None and len(self.users) >= self.max_connections:
            return "Too many connected users"
        if self.joins is not None and self.joins.triggered:
            return "Too many joins per second"
        return None

    def join_refusal(self, socket: Socket, params: dict[str, Any]) -> tuple[str, bool] | None:
        """(reason, disconnect) for a refused join, or None; counts the join as Realtime does."""
        config = params.get("config")
        if self.private_only and not (isinstance(config, dict) and config.get("private") is True):
            return "PrivateOnly: This project only allows private channels", False
        if (
            self.max_connections is not None
            and socket not in self.users
            and len(self.users) >= self.max_connections
        ):
            return "ConnectionRateLimitReached: Too many connected users", False
        if self.joins is not None:
            if self.joins.triggered:
                return "ClientJoinRateLimitReached: Too many joins per second", True
            self.joins.add()
        if self.channels_per_connection is not None and len(socket.channels) >= self.channels_per_connection:
            return "ChannelRateLimitReached: Too many channels", False
        return None


@dataclass
class Channel:
    topic: str
    join_ref: str | None
    token: str
    claims: dict[str, Any]
    bindings: list[tuple[int, Binding, frozenset[int]]] = field(default_factory=list)
    active: bool = False  # changes flow only after "Subscribed to PostgreSQL"
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    expiry: asyncio.TimerHandle | None = None
    private: bool = False
    ack: bool = False  # config.broadcast.ack: reply to each broadcast
    echo: bool = False  # config.broadcast.self: the sender gets its own broadcasts
    presence_key: str = ""
    presence_enabled: bool = False  # config.presence.enabled
    policies: authorization.Policies | None = None  # a private channel's, as evaluated so far
    hub_id: int = 0
    on_cancel: Callable[[], None] | None = None  # leaves the hub

    @property
    def name(self) -> str:
        return self.topic.removeprefix("realtime:")

    def cancel(self) -> None:
        if self.on_cancel is not None:
            self.on_cancel()
            self.on_cancel = None
        for task in self.tasks:
            task.cancel()
        if self.expiry is not None:
            self.expiry.cancel()


def _configure(channel: Channel, config: dict[str, Any]) -> None:
    """The join's `config` as Realtime's Join payload reads it (payloads/join.ex)."""
    broadcast = config.get("broadcast") if isinstance(config.get("broadcast"), dict) else {}
    presence = config.get("presence") if isinstance(config.get("presence"), dict) else {}
    channel.private = config.get("private") is True
    channel.ack = broadcast.get("ack") is True
    channel.echo = broadcast.get("self") is True
    key = presence.get("key")
    channel.presence_key = key if isinstance(key, str) and key else str(uuid.uuid1())
    channel.presence_enabled = presence.get("enabled") is True


def binding_id(binding: Any) -> int:
    """A stable nonzero id for a binding, below 2**27 like Realtime's :erlang.phash2."""
    digest = zlib.crc32(json.dumps(binding, sort_keys=True, separators=(",", ":")).encode())
    return digest % (2**27 - 1) + 1


def token_message(token: str, exc: TokenError) -> str:
    """Realtime's words for a refused token. Past the handshake it says how long ago one expired."""
    message = str(exc)
    exp = _unverified_exp(token) if message.startswith("Token has expired") else None
    return message if exp is None else f"Token has expired {int(time.time()) - exp} seconds ago"


def _unverified_exp(token: str) -> int | None:
    """The `exp` claim of a JWT whose signature was already checked (used for wording only)."""
    try:
        segment = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))).get("exp")
    except (IndexError, ValueError, AttributeError):
        return None
    return exp if isinstance(exp, int) else None


def token_error_reason(message: str) -> str:
    """The join error reason Realtime gives for a token the handshake would refuse."""
    if "not a valid JWT" in message:
        return f"MalformedJWT: {message}"
    if "signature" in message:
        return f"JwtSignatureError: {message}"
    return f"InvalidJWTToken: {message}"


class Socket:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        vsn: str,
        token: str,
        keys: Keys,
        access: Access,
        resync: Callable[[], Awaitable[None]],
        want: Callable[[], Awaitable[None]],
        limits: Limits | None = None,
        delay: float = 0.0,
        hub: Hub | None = None,
        pool: asyncpg.Pool | None = None,
        count_sent: Callable[[], None] | None = None,
        replication: Callable[[], bool] = lambda: True,
    ) -> None:
        self.ws = ws
        self.request = request
        self.vsn = vsn
        self.token = token
        self.channels: dict[str, Channel] = {}
        self._keys = keys
        self._access = access
        self._resync = resync
        self._want = want  # publishes every live binding to the capture triggers
        self._limits = limits
        self._hub = hub or Hub()
        self._pool = pool  # for Realtime Authorization's checks; without one, private is public
        self._count_sent = count_sent  # a broadcast sent, counted against the message quota
        self._replication = replication  # whether Broadcast from Database is being read now
        self.delay = delay  # seconds each frame is held, each way: half the profile's round trip
        self.delivered = 0  # postgres_changes pushes sent to this socket
        # (when to send, text or bytes), or None: close the socket once everything before it was sent.
        self._outbox: asyncio.Queue[tuple[float, str | bytes] | None] = asyncio.Queue()
        self._inbox: asyncio.Queue[tuple[float, Frame, UserBroadcast | None]] = asyncio.Queue()

    def send(self, frame: Frame) -> None:
        due = time.monotonic() + self.delay if self.delay else 0.0
        self._outbox.put_nowait((due, phoenix.encode(frame, self.vsn)))

    def send_bytes(self, data: bytes) -> None:
        due = time.monotonic() + self.delay if self.delay else 0.0
        self._outbox.put_nowait((due, data))

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        handler = asyncio.create_task(self._handle_late()) if self.delay else None
        try:
            await self._read()
        finally:
            for task in (writer, handler):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for channel in self.channels.values():
                channel.cancel()
            self.channels.clear()
            if self._limits is not None:
                self._limits.users.discard(self)

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                await self.ws.close(code=1000)
                return
            due, text = item
            if due and (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # FIFO with rising due times: never reorders
            try:
                if isinstance(text, bytes):
                    await self.ws.send_bytes(text)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def _handle_late(self) -> None:
        """With a distance set: each frame from the client is handled `delay` after it came."""
        while True:
            due, frame, user = await self._inbox.get()
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await self._handle(frame, user)

    async def _read(self) -> None:
        while not self.ws.closed:
            try:
                msg = await self.ws.receive(timeout=IDLE_TIMEOUT_SECONDS)
            except TimeoutError:
                await self.ws.close(code=1000)
                return
            user: UserBroadcast | None = None
            try:
                if msg.type == WSMsgType.TEXT:
                    frame = phoenix.decode(msg.data, self.vsn)
                elif msg.type == WSMsgType.BINARY and self.vsn != "2.0.0":
                    frame = phoenix.decode(msg.data.decode(errors="replace"), self.vsn)
                elif msg.type == WSMsgType.BINARY:
                    try:  # V2's binary framing: a user broadcast push (kind 3)
                        frame, user = decode_user_broadcast_push(msg.data)
                    except (ValueError, UnicodeDecodeError) as exc:
                        raise phoenix.MalformedFrame(str(exc)) from exc
                else:
                    return
            except phoenix.MalformedFrame as exc:
                logger.info("realtime: closing a socket that sent an undecodable frame: {}", exc)
                await self.ws.close(code=1011)
                return
            if self.delay:
                self._inbox.put_nowait((time.monotonic() + self.delay, frame, user))
            else:
                await self._handle(frame, user)

    async def _handle(self, frame: Frame, user: UserBroadcast | None = None) -> None:
        if frame.topic == "phoenix" and frame.event == "heartbeat":
            self.send(phoenix.reply(frame, "ok", {}))
        elif frame.event == "phx_join":
            await self._join(frame)
        elif frame.topic not in self.channels:
            self._answer_unjoined(frame)
        elif frame.join_ref not in (None, self.channels[frame.topic].join_ref):
            return  # a stale message for an earlier join of this topic: Phoenix ignores it
        elif frame.event == "phx_leave":
            channel = self.channels.pop(frame.topic)
            channel.cancel()
            self.send(phoenix.reply(frame, "ok", {}, channel.join_ref))
            self._send_close(channel)
        elif frame.event == "access_token" and isinstance(frame.payload, dict):
            self._refresh(self.channels[frame.topic], frame.payload.get("access_token"))
        elif frame.event == "broadcast":
            await self._broadcast(self.channels[frame.topic], frame, user)
        elif frame.event == "presence":
            await self._presence(self.channels[frame.topic], frame)
        # Anything else Realtime logs and leaves unanswered.

    async def _broadcast(self, channel: Channel, frame: Frame, user: UserBroadcast | None) -> None:
        """BroadcastHandler.handle/2: to the topic's other subscribers (and self with `self`);
        a reply only with `ack`. On a private channel only once the user may write broadcasts:
        otherwise dropped, unanswered even with `ack`."""
        if channel.private and not await self._may_write(channel, "broadcast"):
            return
        if self._count_sent is not None:
            self._count_sent()
        message = user if user is not None else frame.payload
        if isinstance(message, UserBroadcast | dict):
            self._hub.broadcast(channel.hub_id, channel.name, channel.private, message, channel.echo)
        if channel.ack:
            self.send(phoenix.reply(frame, "ok", {}, channel.join_ref))

    async def _may_write(self, channel: Channel, extension: str) -> bool:
        """Whether the private channel's user may send `extension`, asking RLS the first time."""
        if self._pool is None:
            return True
        policies = channel.policies or authorization.Policies()
        if (policies.broadcast_write if extension == "broadcast" else policies.presence_write) is None:
            try:
                if extension == "presence" and policies.presence_read is None:
                    policies = await authorization.read(self._pool, self._context(channel), policies, True)
                policies = await authorization.write(self._pool, self._context(channel), policies)
            except authorization.AuthorizationError as exc:
                logger.info("realtime: could not check {} on {}: {}", extension, channel.topic, exc)
                return False
            channel.policies = policies
            self._hub.allow(
                channel.hub_id, channel.name, True, policies.broadcast_read, policies.presence_read
            )
        return (policies.broadcast_write if extension == "broadcast" else policies.presence_write) is True

    def _context(self, channel: Channel) -> authorization.Context:
        return authorization.Context(channel.name, channel.claims, dict(self.request.headers))

    async def _presence(self, channel: Channel, frame: Frame) -> None:
        """PresenceHandler.handle/3 and the channel's reply: ok, or why not."""
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        event = payload.get("event")
        if event is None:
            self.send(phoenix.reply(frame, "ok", {}, channel.join_ref))
            return
        event = str(event).lower()
        member = channel.hub_id
        if event == "track" and channel.private and not await self._may_write(channel, "presence"):
            self.send(phoenix.reply(frame, "error", {}, channel.join_ref))
            return
        if event == "track":
            tracked = payload.get("payload", {})
            if not isinstance(tracked, dict):
                reason = {"reason": "Presence track payload must be a map"}
                self.send(phoenix.reply(frame, "error", reason, channel.join_ref))
                return
            self._hub.track(member, channel.name, channel.private, channel.presence_key, tracked)
        elif event == "untrack":
            self._hub.untrack(member, channel.name, channel.private)
        else:
            self.send(phoenix.reply(frame, "error", {}, channel.join_ref))
            return
        self.send(phoenix.reply(frame, "ok", {}, channel.join_ref))

    def _answer_unjoined(self, frame: Frame) -> None:
        """Phoenix acknowledges leaving a topic that is not joined; anything else is unmatched."""
        if frame.event == "phx_leave":
            self.send(phoenix.reply(frame, "ok", {}, frame.join_ref))
        else:
            self.send(phoenix.reply(frame, "error", {"reason": "unmatched topic"}))

    def _send_close(self, channel: Channel) -> None:
        self.send(Frame(channel.topic, "phx_close", {}, channel.join_ref, channel.join_ref))

    async def _join(self, frame: Frame) -> None:
        if not frame.topic.startswith("realtime:"):
            self.send(phoenix.reply(frame, "error", {"reason": "unmatched topic"}))
            return
        old = self.channels.pop(frame.topic, None)
        if old is not None:
            old.cancel()
        await self._answer_join(frame)
        if old is not None:
            self._send_close(old)

    async def _answer_join(self, frame: Frame) -> None:
        def refuse(reason: str) -> None:
            self.send(phoenix.reply(frame, "error", {"reason": reason}, frame.join_ref))

        if frame.topic == "realtime:":
            return refuse("TopicNameRequired: You must provide a topic name")
        params = frame.payload if isinstance(frame.payload, dict) else {}
        if self._limits is not None and (refused := self._limits.join_refusal(self, params)):
            reason, disconnect = refused
            logger.info("realtime: join refused: {}", reason)
            refuse(reason)
            if disconnect:  # Realtime sends the transport "disconnect": the socket closes
                self._outbox.put_nowait(None)
            return None
        token = params.get("access_token") or params.get("user_token")
        if not isinstance(token, str) or token.startswith("sb_"):
            token = self.token
        try:
            claims = self._keys.claims(token)
        except TokenError as exc:
            return refuse(token_error_reason(token_message(token, exc)))
        config = params.get("config")
        raw = config.get("postgres_changes") if isinstance(config, dict) else None
        bindings = [b for b in raw if b is not None] if isinstance(raw, list) else []
        if any(not isinstance(b, dict) for b in bindings):
            bad = next(b for b in bindings if not isinstance(b, dict))
            return refuse(f"UnknownErrorOnChannel: expected a map, got: {json.dumps(bad)}")
        channel = Channel(frame.topic, frame.join_ref, token, claims)
        _configure(channel, config if isinstance(config, dict) else {})
        if channel.private and self._pool is not None:
            refused = await self._authorize_join(channel)
            if refused is not None:
                return refuse(refused)
        try:
            replayed = await self._replay(channel, config)
        except replay.ReplayRefused as exc:
            return refuse(str(exc))
        policies = channel.policies
        self.channels[frame.topic] = channel
        echoed = [{**b, "id": binding_id(b)} for b in bindings]
        self.send(phoenix.reply(frame, "ok", {"postgres_changes": echoed}, frame.join_ref))
        hub, name, private = self._hub, channel.name, channel.private
        reads = (policies.broadcast_read, policies.presence_read) if policies else (True, True)
        ids = frozenset(message.id for message in replayed)
        channel.hub_id = hub_id = hub.join(self, name, private, channel.topic, *reads, replayed=ids)
        channel.on_cancel = lambda: hub.leave(hub_id, name, private)
        for message in replayed:  # to this channel only, right after the join's reply
            self.send(Frame(channel.topic, "broadcast", message.broadcast(), None, channel.join_ref))
        if channel.presence_enabled and reads[1] is True:
            state = hub.state(name, private)
            self.send(Frame(channel.topic, "presence_state", state, None, channel.join_ref))
        if self._limits is not None:
            self._limits.users.add(self)  # UsersCounter.add once a join succeeded
        self._watch_expiry(channel)
        if bindings:
            self._spawn(channel, self._subscribe(channel, bindings))
        broadcast = config.get("broadcast") if isinstance(config, dict) else None
        if isinstance(broadcast, dict) and broadcast.get("replication_ready"):
            self._spawn(channel, self._notify_replication_ready(channel))
        return None

    async def _notify_replication_ready(self, channel: Channel) -> None:
        """Realtime's `:notify_replication_ready` for a join that opts in: once Broadcast from
        Database is being read, a system message says so; a minute without, the channel is shut."""
        deadline = time.monotonic() + REPLICATION_READY_SECONDS
        while not self._replication():
            if time.monotonic() >= deadline:
                self._shutdown(channel, "Replication connection was not established in time")
                return
            await asyncio.sleep(REPLICATION_CHECK_SECONDS)
        self._system(channel, "system", "ok", "Replication connection established")

    async def _replay(self, channel: Channel, config: Any) -> list[replay.Stored]:
        """can_replay? and maybe_replay_messages: the stored broadcasts the join asks for, or
        ReplayRefused. A private channel whose user may read presence but not broadcasts is
        refused as unauthorized when it asks for a replay."""
        policies = channel.policies
        if replay.asks(config) and policies is not None and policies.broadcast_read is False:
            raise replay.ReplayRefused(f"Unauthorized: {NO_READ}{channel.name}")
        asked = replay.request(config, channel.private)
        if asked is None or self._pool is None:
            return []
        return await replay.fetch(self._pool, channel.name, asked)

    async def _authorize_join(self, channel: Channel) -> str | None:
        """maybe_assign_policies: the reason a private join is refused, or None (policies set)."""
        assert self._pool is not None
        try:
            policies = await authorization.read(
                self._pool, self._context(channel), authorization.Policies(), channel.presence_enabled
            )
        except authorization.AuthorizationError as exc:
            if not exc.reachable:
                return "UnableToSetPolicies: Realtime was unable to connect to the project database"
            logger.info("realtime: RlsPolicyError on {}: {}", channel.topic, exc)
            policies = authorization.Policies(broadcast_read=False)
        if not (policies.broadcast_read or policies.presence_read):
            return f"Unauthorized: {NO_READ}{channel.name}"
        channel.policies = policies
        return None

    def shutdown(self, join_topic: str, message: str) -> None:
        """Shut the channel joined to `join_topic` down with a system error (the hub's meter)."""
        channel = self.channels.get(join_topic)
        if channel is not None:
            self._shutdown(channel, message)

    def _spawn(self, channel: Channel, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        channel.tasks.add(task)
        task.add_done_callback(channel.tasks.discard)

    async def _subscribe(self, channel: Channel, bindings: list[dict[str, Any]]) -> None:
        """Realtime's `:postgres_subscribe`: make the subscription live, then say so."""
        try:
            parsed = [parse_binding(b) for b in bindings]
            await self._resync()
            role = str(channel.claims.get("role", ""))
            live = [
                (binding_id(raw), b, await self._access.subscribe_tables(b, role))
                for raw, b in zip(bindings, parsed, strict=True)
            ]
        except (BindingError, SubscribeError) as exc:
            self._system(channel, "postgres_changes", "error", str(exc))
            return
        channel.bindings = live
        try:
            await self._want()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            message = f"Unable to subscribe to changes: the database could not be reached: {exc}"
            self._system(channel, "postgres_changes", "error", message)
            return
        channel.active = True
        self._system(channel, "postgres_changes", "ok", "Subscribed to PostgreSQL")

    def _system(self, channel: Channel, extension: str, status: str, message: str) -> None:
        payload = {"channel": channel.name, "extension": extension, "message": message, "status": status}
        self.send(Frame(channel.topic, "system", payload, None, channel.join_ref))

    def _refresh(self, channel: Channel, token: Any) -> None:
        """`access_token`: no reply; new claims for RLS and a fresh subscription."""
        if not isinstance(token, str) or token.startswith("sb_") or token == channel.token:
            return
        try:
            claims = self._keys.claims(token)
        except TokenError as exc:
            self._shutdown(channel, token_message(token, exc))
            return
        channel.token, channel.claims = token, claims
        self._watch_expiry(channel)
        if channel.private and self._pool is not None:
            self._spawn(channel, self._reauthorize(channel))
        if channel.bindings:
            self._spawn(channel, self._resubscribe(channel))

    async def _reauthorize(self, channel: Channel) -> None:
        """The policies again, for the new token; a read it had and lost shuts the channel."""
        assert self._pool is not None
        before = channel.policies or authorization.Policies()
        try:
            after = await authorization.read(
                self._pool, self._context(channel), authorization.Policies(), channel.presence_enabled
            )
        except authorization.AuthorizationError as exc:
            if not exc.reachable:
                self._shutdown(channel, "Realtime was unable to connect to the project database")
                return
            after = authorization.Policies(broadcast_read=False, presence_read=False)
        if not (after.broadcast_read or after.presence_read):
            self._shutdown(channel, NO_READ + channel.name)
            return
        if (before.broadcast_read is True and after.broadcast_read is False) or (
            before.presence_read is True and after.presence_read is False
        ):
            self._shutdown(channel, READ_REVOKED + channel.name)
            return
        channel.policies = after
        self._hub.allow(channel.hub_id, channel.name, True, after.broadcast_read, after.presence_read)

    async def _resubscribe(self, channel: Channel) -> None:
        role = str(channel.claims.get("role", ""))
        try:
            for _, binding, _ in channel.bindings:
                await self._access.subscribe_tables(binding, role)
        except SubscribeError as exc:
            self._system(channel, "postgres_changes", "error", str(exc))
            return
        self._system(channel, "postgres_changes", "ok", "Subscribed to PostgreSQL")

    def _watch_expiry(self, channel: Channel) -> None:
        """Realtime re-checks a join token at its `exp` and shuts the channel when it lapsed."""
        if channel.expiry is not None:
            channel.expiry.cancel()
        exp = channel.claims.get("exp")
        if isinstance(exp, int | float):
            delay = max(0.0, exp - time.time()) + 0.5
            channel.expiry = asyncio.get_running_loop().call_later(delay, self._check_token, channel)

    def _check_token(self, channel: Channel) -> None:
        try:
            channel.claims = self._keys.claims(channel.token)
        except TokenError as exc:
            self._shutdown(channel, token_message(channel.token, exc))
            return
        self._watch_expiry(channel)  # an opaque key's claims come with a fresh `exp`

    def _shutdown(self, channel: Channel, message: str) -> None:
        """Realtime's `shutdown_response`: a system error, then the channel stops."""
        if self.channels.get(channel.topic) is not channel:
            return
        del self.channels[channel.topic]
        channel.cancel()
        self._system(channel, "system", "error", message)
        self._send_close(channel)
