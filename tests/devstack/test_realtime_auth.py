"""Tokens at the handshake, at join and on refresh: Realtime's statuses, messages and shutdowns."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import asyncpg
import jwt
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


def forge(devstack, claims: dict[str, Any], secret: str | None = None) -> str:
    """A token carrying exactly `claims`, signed with the stack's JWT secret or `secret`."""
    return jwt.encode(claims, secret, algorithm="HS256") if secret else devstack.keys.sign(claims)


def bad_tokens(devstack) -> dict[str, str]:
    now = int(time.time())
    return {
        "garbage": "not-a-jwt",
        "wrong secret": forge(devstack, {"role": "anon", "exp": now + 600}, secret="x" * 40),
        "expired": forge(devstack, {"role": "anon", "exp": now - 30}),
        "no role": forge(devstack, {"exp": now + 600}),
    }


HANDSHAKE_ERRORS = {
    "garbage": "The token provided is not a valid JWT",
    "wrong secret": "Failed to validate JWT signature",
    "expired": "Token has expired",
    "no role": "Fields `role` and `exp` are required in JWT",
}


async def refused(url: str, **kwargs: Any) -> tuple[int, Any]:
    with pytest.raises(websockets.InvalidStatus) as error:
        await websockets.connect(url, **kwargs)
    response = error.value.response
    return response.status_code, response.body


@pytest.mark.parametrize("kind", list(HANDSHAKE_ERRORS))
async def test_handshake_with_a_bad_token_is_refused_with_401_and_realtimes_message(devstack, kind) -> None:
    status, body = await refused(websocket_url(devstack.url, bad_tokens(devstack)[kind]))
    assert (status, json.loads(body)) == (401, {"error": HANDSHAKE_ERRORS[kind]})


async def test_handshake_without_a_key_is_refused(devstack) -> None:
    url = websocket_url(devstack.url, "").replace("apikey=&", "")
    assert await refused(url) == (401, b'{"error":"API key is missing"}')


async def test_unknown_serializer_version_is_refused_with_403(devstack) -> None:
    status, _ = await refused(websocket_url(devstack.url, devstack.keys.service_role, vsn="3.0.0"))
    assert status == 403


async def test_x_api_key_header_takes_precedence_over_the_query_parameter(devstack) -> None:
    url = websocket_url(devstack.url, "not-a-jwt")
    ws = await websockets.connect(url, additional_headers={"x-api-key": devstack.keys.service_role})
    raw = Raw(ws, "1.0.0")
    ref = await raw.push("phoenix", "heartbeat", {})
    assert await raw.recv() == reply("phoenix", ref, "ok", {})
    status, _ = await refused(websocket_url(devstack.url, devstack.keys.service_role),
                              additional_headers={"x-api-key": "not-a-jwt"})  # fmt: skip
    assert status == 401


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", "MalformedJWT: The token provided is not a valid JWT"),
        ("wrong secret", "JwtSignatureError: Failed to validate JWT signature"),
        ("no role", "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
    ],
)
async def test_join_with_a_bad_access_token_is_refused(devstack, kind, reason) -> None:
    raw = await connect(devstack)
    ref = await raw.join("bad", JOBS, token=bad_tokens(devstack)[kind])
    assert await raw.recv() == reply("realtime:bad", ref, "error", {"reason": reason})


async def test_join_with_an_expired_access_token_says_how_long_ago(devstack) -> None:
    raw = await connect(devstack)
    ref = await raw.join("stale", JOBS, token=bad_tokens(devstack)["expired"])
    answer = await raw.recv()
    reason = answer["payload"]["response"]["reason"]
    assert answer == reply("realtime:stale", ref, "error", {"reason": reason})
    assert reason.startswith("InvalidJWTToken: Token has expired ") and reason.endswith(" seconds ago")


async def test_opaque_secret_key_works_at_the_handshake_and_in_the_join(
    devstack, db: asyncpg.Connection
) -> None:
    raw = await connect(devstack, devstack.keys.secret)
    await raw.join("opaque", JOBS, token=devstack.keys.secret)
    await raw.recv_until("system")
    job_id = await insert_job(db, "seen by service_role")

    change = await raw.recv()
    assert change["payload"]["data"]["record"]["id"] == job_id


async def test_publishable_style_key_in_the_join_means_the_sockets_token(devstack) -> None:
    alice = str(uuid.uuid4())
    raw = await connect(devstack, devstack.keys.user_token(alice))
    await raw.join("swapped", JOBS, token="sb_publishable_" + "x" * 20)
    await raw.recv()
    assert await raw.recv() == system("swapped", "ok", SUBSCRIBED)


async def test_refresh_with_a_bad_token_shuts_the_channel(devstack) -> None:
    raw = await connect(devstack)
    join_ref = await raw.join("refresh", JOBS)
    await raw.recv_until("system")
    await raw.push("realtime:refresh", "access_token", {"access_token": "not-a-jwt"}, join_ref)

    assert await raw.recv() == system("refresh", "error", "The token provided is not a valid JWT", "system")
    assert await raw.recv() == close("realtime:refresh", join_ref)


async def test_channel_shuts_when_its_join_token_expires(devstack) -> None:
    raw = await connect(devstack)
    soon = devstack.keys.user_token(str(uuid.uuid4()), expires_in=1)
    join_ref = await raw.join("expiring", JOBS, token=soon)
    await raw.recv_until("system")

    shutdown = await raw.recv()
    assert shutdown["event"] == "system" and shutdown["payload"]["extension"] == "system"
    assert shutdown["payload"]["message"].startswith("Token has expired ")
    assert await raw.recv() == close("realtime:expiring", join_ref)
