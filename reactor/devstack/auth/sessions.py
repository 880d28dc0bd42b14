"""Sessions in `auth.sessions`, each with its chain of refresh tokens in `auth.refresh_tokens`,
and the session object GoTrue answers a sign-in with: an access token signed with the stack's
JWT secret (so REST and Realtime accept it), its lifetime, and a refresh token.

Refreshing rotates: the token used is revoked and a child issued. A revoked token used again
within the reuse interval still works (a client that lost the answer retries), answering the
child it already has when there is one; later, it revokes the whole session's tokens.
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from reactor.devstack.auth.errors import bad_request
from reactor.devstack.auth.users import by_id, metadata, signed_in, user_json
from reactor.devstack.keys import Keys

ACCESS_TOKEN_SECONDS = 3600  # GoTrue's default JWT expiry
REUSE_INTERVAL_SECONDS = 10  # GoTrue's default refresh token reuse interval
SCOPES = ("global", "local", "others")
_ALPHANUMERIC = string.ascii_letters + string.digits


async def start(conn: asyncpg.Connection, keys: Keys, user: asyncpg.Record, issuer: str) -> dict[str, Any]:
    """A new session for `user`, signed in now."""
    async with conn.transaction():
        session_id = uuid.uuid4()
        created = await conn.fetchval(
            "insert into auth.sessions (id, user_id) values ($1, $2) returning created_at",
            session_id,
            user["id"],
        )
        token = await _grant(conn, user["id"], session_id, parent=None)
        user = await signed_in(conn, user["id"])
    return _session(keys, user, session_id, created, token, issuer)


async def refresh(conn: asyncpg.Connection, keys: Keys, token: str, issuer: str) -> dict[str, Any]:
    """The session of refresh token `token`, with a fresh access token and the next refresh token."""
    async with conn.transaction():
        used = await conn.fetchrow(
            """select t.id, t.token, t.user_id, t.session_id, t.revoked,
                      t.updated_at < now() - make_interval(secs => $2) as stale, s.created_at as started
               from auth.refresh_tokens t join auth.sessions s on s.id = t.session_id
               where t.token = $1 for update of t, s""",
            token,
            REUSE_INTERVAL_SECONDS,
        )
        user = await by_id(conn, used["user_id"]) if used is not None else None
        if used is None or user is None:
            raise bad_request("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
        issued = await _live_child(conn, used) if used["revoked"] else None
        reused = used["revoked"] and issued is None and used["stale"]
        if reused:
            await conn.execute(
                "update auth.refresh_tokens set revoked = true, updated_at = now() where session_id = $1",
                used["session_id"],
            )
        elif issued is None:
            await conn.execute(
                "update auth.refresh_tokens set revoked = true, updated_at = now() where id = $1", used["id"]
            )
            issued = await _grant(conn, user["id"], used["session_id"], parent=token)
        await conn.execute("update auth.sessions set updated_at = now() where id = $1", used["session_id"])
    if reused:  # the revocation above is committed, as GoTrue commits it
        raise bad_request("refresh_token_already_used", "Invalid Refresh Token: Already Used")
    return _session(keys, user, used["session_id"], used["started"], issued, issuer)


async def end(conn: asyncpg.Connection, user_id: uuid.UUID, session_id: uuid.UUID | None, scope: str) -> None:
    """Sign out: this session (`local`), the user's other sessions (`others`) or all of them
    (`global`, and any scope for a token that names no session). Their refresh tokens go with them."""
    if session_id is not None and scope == "local":
        await conn.execute("delete from auth.sessions where id = $1", session_id)
    elif session_id is not None and scope == "others":
        await conn.execute("delete from auth.sessions where user_id = $1 and id <> $2", user_id, session_id)
    else:
        await conn.execute("delete from auth.sessions where user_id = $1", user_id)


async def exists(conn: asyncpg.Connection, session_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("select 1 from auth.sessions where id = $1", session_id))


async def _live_child(conn: asyncpg.Connection, used: asyncpg.Record) -> str | None:
    """The unrevoked token issued for `used`, which a retried refresh answers again."""
    return await conn.fetchval(
        "select token from auth.refresh_tokens where session_id = $1 and parent = $2 and not revoked",
        used["session_id"],
        used["token"],
    )


async def _grant(
    conn: asyncpg.Connection, user_id: uuid.UUID, session_id: uuid.UUID, parent: str | None
) -> str:
    token = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(12))
    await conn.execute(
        "insert into auth.refresh_tokens (token, user_id, parent, session_id) values ($1, $2, $3, $4)",
        token,
        user_id,
        parent,
        session_id,
    )
    return token


def _session(
    keys: Keys,
    user: asyncpg.Record,
    session_id: uuid.UUID,
    started: datetime,
    refresh_token: str,
    issuer: str,
) -> dict[str, Any]:
    now = int(time.time())
    expires_at = now + ACCESS_TOKEN_SECONDS
    app_metadata, user_metadata = metadata(user)
    access_token = keys.sign(
        {
            "iss": issuer,
            "sub": str(user["id"]),
            "aud": user["aud"],
            "exp": expires_at,
            "iat": now,
            "email": user["email"] or "",
            "phone": "",
            "app_metadata": app_metadata,
            "user_metadata": user_metadata,
            "role": user["role"],
            "aal": "aal1",
            "amr": [
                {
                    "method": "anonymous" if user["is_anonymous"] else "password",
                    "timestamp": int(started.timestamp()),
                }
            ],
            "session_id": str(session_id),
            "is_anonymous": user["is_anonymous"],
        }
    )
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "expires_at": expires_at,
        "refresh_token": refresh_token,
        "user": user_json(user),
    }
