"""Realtime Authorization: what a user may do on a private channel, asked of RLS on
`realtime.messages` as Supabase Realtime asks it (lib/realtime/tenants/authorization.ex).

Reading: in a transaction that is always rolled back, one probe row per extension (broadcast,
and presence when the join enables it) is inserted for the topic as the table's owner; then, with
the user's role, claims and `realtime.topic` set, the rows the user can SELECT say which
extensions it may receive. Writing: with those settings, one probe row per extension is inserted
as the user, each in a savepoint; an insufficient-privilege error means no. service_role bypasses
RLS, so it may do everything. A check answers None for an extension it did not evaluate.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

BROADCAST, PRESENCE = "broadcast", "presence"


class AuthorizationError(Exception):
    """The check itself failed. `reachable` is False when the database could not be reached."""

    def __init__(self, message: str, reachable: bool = True) -> None:
        super().__init__(message)
        self.reachable = reachable


@dataclass(frozen=True)
class Policies:
    broadcast_read: bool | None = None
    broadcast_write: bool | None = None
    presence_read: bool | None = None
    presence_write: bool | None = None


@dataclass(frozen=True)
class Context:
    """Who asks, about which topic: the channel's name (without `realtime:`), the token's claims
    and the request's headers (given to policies as `request.headers`)."""

    topic: str
    claims: dict[str, Any]
    headers: dict[str, str]

    @property
    def role(self) -> str:
        return str(self.claims.get("role", ""))


async def _impersonate(conn: asyncpg.Connection, ctx: Context) -> None:
    await conn.execute(
        """select set_config('role', $1, true), set_config('realtime.topic', $2, true),
                  set_config('request.jwt.claims', $3, true), set_config('request.jwt.claim.sub', $4, true),
                  set_config('request.jwt.claim.role', $1, true), set_config('request.headers', $5, true)""",
        ctx.role,
        ctx.topic,
        json.dumps(ctx.claims),
        str(ctx.claims.get("sub") or ""),
        json.dumps(ctx.headers),
    )


async def read(pool: asyncpg.Pool, ctx: Context, policies: Policies, presence: bool) -> Policies:
    """`policies` with broadcast_read (and presence_read when `presence`) evaluated."""
    probes = {BROADCAST: uuid.uuid4(), **({PRESENCE: uuid.uuid4()} if presence else {})}
    try:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(
                    "insert into realtime.messages (id, topic, extension)"
                    " select unnest($1::uuid[]), $2, unnest($3::text[])",
                    list(probes.values()),
                    ctx.topic,
                    list(probes),
                )
                await _impersonate(conn, ctx)
                rows = await conn.fetch(
                    "select id from realtime.messages where id = any($1::uuid[])", list(probes.values())
                )
            finally:
                await tx.rollback()
    except asyncpg.PostgresError as exc:
        raise AuthorizationError(str(exc)) from exc
    except (OSError, asyncpg.InterfaceError) as exc:
        raise AuthorizationError(str(exc), reachable=False) from exc
    seen = {row["id"] for row in rows}
    policies = replace(policies, broadcast_read=probes[BROADCAST] in seen)
    if presence:
        policies = replace(policies, presence_read=probes[PRESENCE] in seen)
    return policies


async def write(pool: asyncpg.Pool, ctx: Context, policies: Policies) -> Policies:
    """`policies` with broadcast_write and presence_write evaluated."""
    allowed: dict[str, bool] = {}
    try:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await _impersonate(conn, ctx)
                for extension in (BROADCAST, PRESENCE):
                    try:
                        async with conn.transaction():  # a savepoint
                            await conn.execute(
                                "insert into realtime.messages (topic, extension) values ($1, $2)",
                                ctx.topic,
                                extension,
                            )
                        allowed[extension] = True
                    except asyncpg.InsufficientPrivilegeError:
                        allowed[extension] = False
            finally:
                await tx.rollback()
    except asyncpg.PostgresError as exc:
        raise AuthorizationError(str(exc)) from exc
    except (OSError, asyncpg.InterfaceError) as exc:
        raise AuthorizationError(str(exc), reachable=False) from exc
    return replace(policies, broadcast_write=allowed[BROADCAST], presence_write=allowed[PRESENCE])
