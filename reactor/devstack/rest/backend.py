"""The database side of a `/rest/v1` request: the schema cache, and the request's statements run as
PostgREST runs them, in one transaction with `role` and `request.jwt.claims` set from its token.

rpc.py and tables.py turn a request into SQL and run it here; endpoint.py, above all three, routes
requests to them and answers their errors.

The profile's PostgREST settings live here (docs/hosted-supabase.md gives their sources):
- `max_rows`, PostgREST's db-max-rows: rpc.py and tables.py cap every read's LIMIT with it.
- `statement_timeout_ms` and `anon_statement_timeout_ms`: each request's transaction gets its
  role's statement_timeout, as PostgREST applies the impersonated role's settings (service_role
  has none on Supabase and keeps the authenticator's); a function's own `SET statement_timeout`
  replaces it, as PostgREST hoists it (db-hoisted-tx-settings).
- `schema_cache`: the catalog is read at start and again only on `NOTIFY pgrst` (empty or
  'reload schema'), on a connection that LISTENs (stack.py gives the pool one more for it);
  requests keep the old catalog until the new one is read. Without it the catalog is re-read on every miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import asyncpg
from aiohttp import web

from reactor.devstack.profile import Profile
from reactor.devstack.rest.catalog import SCHEMA, Catalog
from reactor.devstack.rest.query import QueryError

logger = logging.getLogger(__name__)

CHANNEL = "pgrst"  # PostgREST's db-channel
_RELOAD_PAYLOADS = ("", "reload schema")  # what makes PostgREST reload its schema cache
_LISTEN_RETRY_SECONDS = 1.0


class Backend:
    """The REST pool and the schema cache read from it."""

    def __init__(self, pool: asyncpg.Pool, profile: Profile | None = None) -> None:
        profile = profile or Profile.local()
        self._pool = pool
        self._catalog: Catalog | None = None
        self.max_rows = profile.max_rows
        self._timeouts = _role_timeouts(profile)
        self._snapshot = profile.schema_cache
        self._stale = False
        self._reloading: asyncio.Task | None = None
        self._listener: asyncio.Task | None = None
        if self._snapshot:
            with contextlib.suppress(RuntimeError):  # no running loop: started by the first request
                self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def catalog(self, reload: bool = False) -> Catalog:
        """The schema cache. `reload` asks for a fresh read after a miss, which a snapshot
        (the hosted profile) refuses: only NOTIFY pgrst refreshes it."""
        if self._snapshot:
            if self._listener is None:
                self._listener = asyncio.get_running_loop().create_task(self._listen())
            if self._catalog is None:
                if self._reloading is None or self._reloading.done():  # none yet, or it failed
                    self._schedule_reload()
                assert self._reloading is not None
                await asyncio.shield(self._reloading)
            assert self._catalog is not None
            return self._catalog
        if self._catalog is None or reload:
            self._catalog = await Catalog.load(self._pool)
        return self._catalog

    def close(self) -> None:
        for task in (self._listener, self._reloading):
            if task is not None:
                task.cancel()

    async def _listen(self) -> None:
        """LISTEN pgrst on a connection of the pool, then read the catalog, so no change made
        after the read goes unnoticed; again after the connection is lost, as PostgREST does."""
        while True:
            try:
                async with self._pool.acquire() as conn:
                    await self._listen_on(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("REST schema cache: LISTEN %s failed (%s); retrying", CHANNEL, exc)
            await asyncio.sleep(_LISTEN_RETRY_SECONDS)

    async def _listen_on(self, conn: asyncpg.Connection) -> None:
        """Until `conn` is lost."""
        lost = asyncio.Event()

        def on_lost(_conn: object) -> None:
            lost.set()

        conn.add_termination_listener(on_lost)
        await conn.add_listener(CHANNEL, self._notified)
        try:
            self._schedule_reload()
            await lost.wait()
        finally:
            conn.remove_termination_listener(on_lost)
            if not conn.is_closed():
                await conn.remove_listener(CHANNEL, self._notified)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload in _RELOAD_PAYLOADS:
            self._schedule_reload()

    def _schedule_reload(self) -> None:
        """Read the catalog again; notifications during a read make one more read after it."""
        self._stale = True
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload_while_stale())
            self._reloading.add_done_callback(_log_failure)

    async def _reload_while_stale(self) -> None:
        while self._stale:
            self._stale = False
            self._catalog = await Catalog.load(self._pool)

    def catalog_now(self) -> Catalog:
        """The catalog already loaded by this request's earlier lookups."""
        assert self._catalog is not None
        return self._catalog

    async def counted_body(
        self,
        request: web.Request,
        claims: dict[str, Any],
        readonly: bool,
        sql: str,
        values: list,
        function_settings: dict[str, str] | None = None,
    ) -> tuple[int, int, str | None]:
        """Run `sql`, a statement giving one row of (rows in all, rows shown, body as JSON text),
        as PostgREST runs a request (see transaction()), in one round trip instead of three.

        Grants and row-level security are checked when a statement starts, so the settings must
        come from an earlier statement of the same transaction. Both are one prepared statement,
        `settings UNION ALL sql`, with a flag that keeps one branch or the other, executed twice
        in one pipeline (asyncpg's fetchmany): the first execution makes the settings, the second
        runs `sql` under them, and the Sync that ends the pipeline commits both as one implicit
        transaction, or rolls both back when either fails."""
        settings = self._settings(request, claims, function_settings)
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
        return _RequestTransaction(self._pool, self._settings(request, claims), readonly)

    def _settings(
        self, request: web.Request, claims: dict[str, Any], function_settings: dict[str, str] | None = None
    ) -> dict[str, str]:
        settings = _settings(request, claims)
        if self._timeouts is not None:
            # Before `role`, as PostgREST sets the role's settings; a function's own follows.
            timeout = (function_settings or {}).get("statement_timeout")
            if timeout is None:
                timeout = self._timeouts.get(claims["role"], self._timeouts[""])
            settings = {"statement_timeout": timeout, **settings}
        return settings


def _role_timeouts(profile: Profile) -> dict[str, str] | None:
    """statement_timeout by role ("" for any other), or None when the profile sets none."""
    if profile.statement_timeout_ms is None and profile.anon_statement_timeout_ms is None:
        return None
    other = str(round(profile.statement_timeout_ms or 0))  # in ms; 0: no timeout
    anon = profile.anon_statement_timeout_ms
    return {"anon": other if anon is None else str(round(anon)), "": other}


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("REST schema cache: reading the catalog failed: %s", task.exception())


class _RequestTransaction:
    """BEGIN and the request's settings go in one round trip (a simple-protocol query, values as
    quoted literals), then the statement, then COMMIT or ROLLBACK."""

    def __init__(self, pool: asyncpg.Pool, settings: dict[str, str], readonly: bool) -> None:
        self._pool, self._settings, self._readonly = pool, settings, readonly

    async def __aenter__(self) -> asyncpg.Connection:
        settings = self._settings
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
