"""The local stack's `/rest/v1`: the subset of PostgREST that the official clients use.

Every request runs in one transaction with `role` and `request.jwt.claims` set from its bearer
token, exactly as PostgREST runs it, so Postgres itself enforces grants and row-level security.
Status codes and error bodies follow PostgREST's (its error reference: SQLSTATE to HTTP status,
`PGRST…` codes, and `PTxyz` for a status a function raises).
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import asyncpg
from aiohttp import web

from reactor.devstack.faults import Faults
from reactor.devstack.keys import Keys, TokenError
from reactor.devstack.rest_catalog import SCHEMA, Catalog
from reactor.devstack.rest_query import QueryError
from reactor.devstack.rest_rpc import call_function
from reactor.devstack.rest_tables import table_request

_HANG_POLL_SECONDS = 0.05
_SQLSTATE_STATUS = {
    "23503": 409,
    "23505": 409,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
    "25006": 405,
    "22023": 401,
    "21000": 500,
    "57P01": 503,
    "53400": 500,
}
_SQLSTATE_PREFIX_STATUS = {"08": 503, "53": 503, "28": 403, "0L": 403, "0P": 403, "P0": 500}


def error_response(
    code: str,
    message: str,
    status: int,
    details: str | None = None,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return web.json_response(
        body, status=status, headers={"Proxy-Status": f"PostgREST; error={code}", **(headers or {})}
    )


def database_error(exc: asyncpg.PostgresError, role: str) -> web.Response:
    state = exc.sqlstate or "XX000"
    if state == "42501":
        status = 401 if role == "anon" else 403
    elif state.startswith("PT") and state[2:].isdigit():
        status = int(state[2:])
    else:
        status = _SQLSTATE_STATUS.get(state) or _SQLSTATE_PREFIX_STATUS.get(state[:2], 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(
        state,
        exc.args[0] if exc.args else str(exc),
        status,
        getattr(exc, "detail", None),
        getattr(exc, "hint", None),
        headers,
    )


class Rest:
    def __init__(self, pool: asyncpg.Pool, keys: Keys, faults: Faults) -> None:
        self._pool = pool
        self._keys = keys
        self._faults = faults
        self._catalog: Catalog | None = None
        self._closing = False

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        router.add_route("*", prefix + "/rpc/{function}", self._rpc)
        router.add_route("*", prefix + "/{table}", self._table)

    async def catalog(self, reload: bool = False) -> Catalog:
        if self._catalog is None or reload:
            self._catalog = await Catalog.load(self._pool)
        return self._catalog

    def catalog_now(self) -> Catalog:
        """The catalog already loaded by this request's earlier lookups."""
        assert self._catalog is not None
        return self._catalog

    # -- request plumbing -------------------------------------------------------------------

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, functools.partial(call_function, self))

    async def _table(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, functools.partial(table_request, self))

    async def _serve(self, request: web.Request, handler) -> web.StreamResponse:
        status, hang = self._faults.rest_fault()
        if hang:
            await self._hang()
        elif status:
            return web.Response(
                status=status, text=f"<html><body>{status}</body></html>", content_type="text/html"
            )
        try:
            claims = self._claims(request)
        except TokenError as exc:
            code = "PGRST303" if exc.message == "Token has expired" else "PGRST301"
            message = "JWT expired" if code == "PGRST303" else exc.message
            return error_response(
                code,
                message,
                401,
                headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{message}"'},
            )
        profile_header = "Accept-Profile" if request.method in ("GET", "HEAD") else "Content-Profile"
        profile = request.headers.get(profile_header, SCHEMA)
        if profile != SCHEMA:
            return error_response(
                "PGRST106",
                f"Invalid schema: {profile}",
                406,
                hint=f"Only the following schemas are exposed: {SCHEMA}",
            )
        role = claims["role"]
        try:
            return await handler(request, claims)
        except QueryError as exc:
            return error_response(exc.code, exc.message, exc.status, exc.details, exc.hint)
        except asyncpg.PostgresError as exc:
            return database_error(exc, role)

    async def _hang(self) -> None:
        """Hold the request while the hang fault lasts; it ends early when the fault is cleared or
        the stack stops, so a stopping stack never waits out a long hang."""
        while self._faults.rest_fault()[1] and not self._closing:
            await asyncio.sleep(_HANG_POLL_SECONDS)

    def close(self) -> None:
        self._closing = True

    def _claims(self, request: web.Request) -> dict[str, Any]:
        """The bearer token's claims; an `sb_…` or missing bearer falls back to the apikey, as
        Supabase's gateway translates it."""
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if bearer and not bearer.startswith("sb_"):
            return self._keys.claims(bearer)
        apikey = request.headers.get("apikey") or request.query.get("apikey")
        return self._keys.claims(apikey or bearer or None)

    async def counted_body(
        self, request: web.Request, claims: dict[str, Any], readonly: bool, sql: str, values: list
    ) -> tuple[int, int, str | None]:
        """Run `sql`, a statement giving one row of (rows in all, rows shown, body as JSON text),
        as PostgREST runs a request (see transaction()), in one round trip instead of three.

        Grants and row-level security are checked when a statement starts, so the settings must
        come from an earlier statement of the same transaction. Both are one prepared statement,
        `settings UNION ALL sql`, with a flag that keeps one branch or the other, executed twice
        in one pipeline (asyncpg's fetchmany): the first execution makes the settings, the second
        runs `sql` under them, and the Sync that ends the pipeline commits both as one implicit
        transaction, or rolls both back when either fails."""
        settings = _settings(request, claims)
        if readonly:
            settings["transaction_read_only"] = "on"
        n = len(values)
        flag = f"${n + 1}::boolean"
        calls = ", ".join(f"set_config({_literal(k)}, ${n + 2 + i}, true)" for i, k in enumerate(settings))
        combined = (
            f"select null::bigint, null::bigint, null::text from (select {calls}) _c where {flag} "
            f"union all select * from ({sql}) _m where not {flag}"
        )
        unused = [None] * len(settings)
        async with self._pool.acquire() as conn:
            _, (total, shown, body) = await conn.fetchmany(
                combined, [[*[None] * n, True, *settings.values()], [*values, False, *unused]]
            )
        return total, shown, body

    def transaction(
        self, request: web.Request, claims: dict[str, Any], readonly: bool
    ) -> _RequestTransaction:
        """A connection in a transaction set up as PostgREST sets up each request."""
        return _RequestTransaction(self._pool, request, claims, readonly)


class _RequestTransaction:
    """BEGIN and the request's settings go in one round trip (a simple-protocol query, values as
    quoted literals), then the statement, then COMMIT or ROLLBACK."""

    def __init__(
        self, pool: asyncpg.Pool, request: web.Request, claims: dict[str, Any], readonly: bool
    ) -> None:
        self._pool, self._request, self._claims, self._readonly = pool, request, claims, readonly

    async def __aenter__(self) -> asyncpg.Connection:
        settings = _settings(self._request, self._claims)
        calls = ", ".join(f"set_config({_literal(k)}, {_literal(v)}, true)" for k, v in settings.items())
        self._conn = await self._pool.acquire()
        try:
            await self._conn.execute(f"begin{' read only' if self._readonly else ''}; select {calls}")
        except BaseException:
            await self._close(failed=True)
            raise
        return self._conn

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self._close(failed=exc_type is not None)

    async def _close(self, failed: bool) -> None:
        try:
            if self._conn.is_in_transaction():
                await self._conn.execute("rollback" if failed else "commit")
        finally:
            await self._pool.release(self._conn)


def _settings(request: web.Request, claims: dict[str, Any]) -> dict[str, str]:
    """What PostgREST sets for each request, as transaction-local settings."""
    headers = {
        k.lower(): v for k, v in request.headers.items() if k.lower() not in ("authorization", "apikey")
    }
    settings = {
        "search_path": SCHEMA,
        "role": claims["role"],
        "request.jwt.claims": json.dumps(claims),
        "request.method": request.method,
        "request.path": request.path,
        "request.headers": json.dumps(headers),
    }
    if any("\x00" in value for value in settings.values()):
        raise QueryError("PGRST100", "a request value contains a NUL character", 400)
    return settings


def _literal(value: str) -> str:
    """A string as an SQL literal; the pool's connections run with standard_conforming_strings on,
    so only the quote needs doubling (Postgres text cannot hold NUL: _settings refuses it)."""
    return "'" + value.replace("'", "''") + "'"
