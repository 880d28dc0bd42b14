"""The database side of a `/rest/v1` request: the schema cache, and the request's statements run as
PostgREST runs them, in one transaction with `role` and `request.jwt.claims` set from its token.

rpc.py and tables.py turn a request into SQL and run it here; endpoint.py, above all three, routes
requests to them and answers their errors.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

from reactor.devstack.rest.catalog import SCHEMA, Catalog
from reactor.devstack.rest.query import QueryError


class Backend:
    """The REST pool and the schema cache read from it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._catalog: Catalog | None = None

    async def catalog(self, reload: bool = False) -> Catalog:
        if self._catalog is None or reload:
            self._catalog = await Catalog.load(self._pool)
        return self._catalog

    def catalog_now(self) -> Catalog:
        """The catalog already loaded by this request's earlier lookups."""
        assert self._catalog is not None
        return self._catalog

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
