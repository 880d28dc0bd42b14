"""One Realtime websocket: Phoenix's socket and channel protocol as Supabase Realtime answers it.

Heartbeats on `phoenix`; `phx_join` on `realtime:<name>` with postgres_changes bindings echoed
in order with ids; the "Subscribed to PostgreSQL" system message once the subscription is live;
`phx_leave`, `access_token`; unknown topics answered "unmatched topic"; a duplicate join closes
the old channel after answering the new one; an undecodable frame closes the socket with 1011,
as a crashed Phoenix socket process does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import WSMsgType, web
from loguru import logger

from reactor.devstack.keys import Keys, TokenError
from reactor.devstack.realtime import phoenix
from reactor.devstack.realtime.access import Access, SubscribeError
from reactor.devstack.realtime.filters import Binding, BindingError, parse_binding
from reactor.devstack.realtime.phoenix import Frame

IDLE_TIMEOUT_SECONDS = 60  # Phoenix drops a socket that sent nothing for this long


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

    @property
    def name(self) -> str:
        return self.topic.removeprefix("realtime:")

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.expiry is not None:
            self.expiry.cancel()


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
        self._outbox: asyncio.Queue[str] = asyncio.Queue()

    def send(self, frame: Frame) -> None:
        self._outbox.put_nowait(phoenix.encode(frame, self.vsn))

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        try:
            await self._read()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            for channel in self.channels.values():
                channel.cancel()
            self.channels.clear()

    async def _write(self) -> None:
        while True:
            text = await self._outbox.get()
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def _read(self) -> None:
        while not self.ws.closed:
            try:
                msg = await self.ws.receive(timeout=IDLE_TIMEOUT_SECONDS)
            except TimeoutError:
                await self.ws.close(code=1000)
                return
            if msg.type == WSMsgType.TEXT:
                text = msg.data
            elif msg.type == WSMsgType.BINARY and self.vsn != "2.0.0":
                text = msg.data.decode(errors="replace")
            elif msg.type == WSMsgType.BINARY:
                continue  # binary frames carry broadcasts only, which the local stack lacks
            else:
                return
            try:
                frame = phoenix.decode(text, self.vsn)
            except phoenix.MalformedFrame as exc:
                logger.info("realtime: closing a socket that sent an undecodable frame: {}", exc)
                await self.ws.close(code=1011)
                return
            self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        if frame.topic == "phoenix" and frame.event == "heartbeat":
            self.send(phoenix.reply(frame, "ok", {}))
        elif frame.event == "phx_join":
            self._join(frame)
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

    def _answer_unjoined(self, frame: Frame) -> None:
        """Phoenix acknowledges leaving a topic that is not joined; anything else is unmatched."""
        if frame.event == "phx_leave":
            self.send(phoenix.reply(frame, "ok", {}, frame.join_ref))
        else:
            self.send(phoenix.reply(frame, "error", {"reason": "unmatched topic"}))

    def _send_close(self, channel: Channel) -> None:
        self.send(Frame(channel.topic, "phx_close", {}, channel.join_ref, channel.join_ref))

    def _join(self, frame: Frame) -> None:
        if not frame.topic.startswith("realtime:"):
            self.send(phoenix.reply(frame, "error", {"reason": "unmatched topic"}))
            return
        old = self.channels.pop(frame.topic, None)
        if old is not None:
            old.cancel()
        self._answer_join(frame)
        if old is not None:
            self._send_close(old)

    def _answer_join(self, frame: Frame) -> None:
        def refuse(reason: str) -> None:
            self.send(phoenix.reply(frame, "error", {"reason": reason}, frame.join_ref))

        if frame.topic == "realtime:":
            return refuse("TopicNameRequired: You must provide a topic name")
        params = frame.payload if isinstance(frame.payload, dict) else {}
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
        self.channels[frame.topic] = channel
        echoed = [{**b, "id": binding_id(b)} for b in bindings]
        self.send(phoenix.reply(frame, "ok", {"postgres_changes": echoed}, frame.join_ref))
        self._watch_expiry(channel)
        if bindings:
            self._spawn(channel, self._subscribe(channel, bindings))
        return None

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
        if channel.bindings:
            self._spawn(channel, self._resubscribe(channel))

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
