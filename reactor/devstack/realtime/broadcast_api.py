"""Realtime's REST broadcast API, as Supabase Realtime answers it behind the API gateway.

`POST /realtime/v1/api/broadcast` with `{"messages": [{"topic", "event", "payload", "private"}]}`
(BroadcastController and Tenants.BatchBroadcast; supabase-js `channel.send()` on a channel that
is not joined) and `POST /realtime/v1/api/broadcast/<topic>/events/<event>[?private=true]` with
the payload as the body (BroadcastSingleController; supabase-js `channel.httpSend()`, supabase-py
`http_send()`), both 202 with an empty body.

The gateway first wants an API key (401 "No API key found in request" / "Invalid API key");
Realtime then wants a valid token, the bearer or else the apikey (401 {"message":
"Unauthorized"}). A private message is sent only if RLS on `realtime.messages` lets the caller
write broadcasts on its topic (authorization.py): the batch endpoint silently skips the topics
the caller may not write to, the single one answers 403 {"message": "Unauthorized"}. Invalid
bodies get 422 with Ecto's `{"errors": ...}`; over the hosted message quota, 429.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from reactor.devstack import apikey
from reactor.devstack.keys import Keys, TokenError
from reactor.devstack.realtime import authorization
from reactor.devstack.realtime.hub import Hub, UserBroadcast
from reactor.devstack.realtime.socket import RateCounter

BLANK = "can't be blank"
INVALID = "is invalid"


class BroadcastApi:
    def __init__(
        self,
        pool: asyncpg.Pool,
        keys: Keys,
        hub: Hub,
        rate: RateCounter | None,
        count_sent: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._keys = keys
        self._hub = hub
        self._rate = rate  # the project's message quota (hosted profile), or None
        self._count_sent = count_sent

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        router.add_post(prefix + "/api/broadcast", self._batch)
        router.add_post(prefix + "/api/broadcast/{topic}/events/{event}", self._single)

    def _claims(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The caller's claims, or the gateway's or Realtime's 401."""
        refused = apikey.refusal(self._keys, request)
        if refused is not None:
            return refused
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        token = bearer if bearer and not bearer.startswith("sb_") else request.headers.get("apikey")
        try:
            return self._keys.claims(token or request.query.get("apikey"))
        except TokenError:
            return web.json_response({"message": "Unauthorized"}, status=401)

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        if isinstance(claims, web.Response):
            return claims
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return _message(400, "Bad Request")
        messages, errors = _valid_batch(body)
        if errors is not None:
            return web.json_response({"errors": errors}, status=422)
        if self._rate is not None:
            if self._rate.avg > self._rate.limit:
                return _message(429, "You have exceeded your rate limit")
            if len(messages) + self._rate.avg > self._rate.limit:
                return _message(429, "Too many messages to broadcast, please reduce the batch size")
        private_topics: dict[str, list[dict[str, Any]]] = {}
        for message in messages:
            if message["private"]:
                private_topics.setdefault(message["topic"], []).append(message)
            else:
                self._send_json(message)
        for topic, sent in private_topics.items():
            if await self._may_write(request, claims, topic):
                for message in sent:
                    self._send_json(message)
        return web.Response(status=202)

    def _send_json(self, message: dict[str, Any]) -> None:
        frame = {"payload": message["payload"], "event": message["event"], "type": "broadcast"}
        if message.get("id") is not None:
            frame["meta"] = {"id": message["id"]}
        self._count_sent()
        self._hub.broadcast(None, message["topic"], message["private"], frame, True)

    async def _single(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        if isinstance(claims, web.Response):
            return claims
        topic, event = request.match_info["topic"], request.match_info["event"]
        private = request.query.get("private") == "true"
        raw = await request.read()
        if request.content_type == "application/octet-stream":
            broadcast = UserBroadcast(event, raw, json_payload=False)
        elif request.content_type == "application/json":
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                return _message(400, "Bad Request")
            if payload is None:
                return web.json_response({"errors": {"payload": [BLANK]}}, status=422)
            if not isinstance(payload, dict):
                payload = {"_json": payload}  # as Phoenix's JSON parser hands a non-object on
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
            broadcast = UserBroadcast(event, text, json_payload=True)
        else:
            return _message(415, "Unsupported Media Type")
        if self._rate is not None and self._rate.avg >= self._rate.limit:
            return _message(429, "You have exceeded your rate limit")
        if private and not await self._may_write(request, claims, topic):
            return _message(403, "Unauthorized")
        self._count_sent()
        self._hub.broadcast(None, topic, private, broadcast, True)
        return web.Response(status=202)

    async def _may_write(self, request: web.Request, claims: dict[str, Any], topic: str) -> bool:
        ctx = authorization.Context(topic, claims, dict(request.headers))
        try:
            policies = await authorization.write(self._pool, ctx, authorization.Policies())
        except authorization.AuthorizationError:
            return False
        return policies.broadcast_write is True


def _message(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _valid_batch(body: Any) -> tuple[list[dict[str, Any]], Any]:
    """The batch's messages with `private` defaulted, or Ecto's errors for the body."""
    raw = body.get("messages") if isinstance(body, dict) else None
    if raw is None:
        return [], {"messages": [BLANK]}
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        return [], {"messages": [INVALID]}
    messages, errors, failed = [], [], False
    for item in raw:
        error: dict[str, list[str]] = {}
        for key in ("topic", "event"):
            if item.get(key) in (None, ""):
                error[key] = [BLANK]
            elif not isinstance(item[key], str):
                error[key] = [INVALID]
        if item.get("payload") is None:
            error["payload"] = [BLANK]
        elif not isinstance(item["payload"], dict):
            error["payload"] = [INVALID]
        private = item.get("private")
        if private is not None and not isinstance(private, bool):
            error["private"] = [INVALID]
        failed = failed or bool(error)
        errors.append(error)
        messages.append({**item, "private": private is True})
    return messages, ({"messages": errors} if failed else None)
