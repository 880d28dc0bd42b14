"""The local stack's `/rest/v1`: the subset of PostgREST that the official clients use.

Every request runs in one transaction with `role` and `request.jwt.claims` set from its bearer
token, exactly as PostgREST runs it, so Postgres itself enforces grants and row-level security.
Status codes and error bodies follow PostgREST (shared/reference/supabase-wire.md, part B).
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
from reactor.devstack.rest_catalog import SCHEMA, Catalog, Function
from reactor.devstack.rest_query import (
    Params,
    QueryError,
    Source,
    ident,
    order_by,
    paging,
    select_list,
    where,
)
from reactor.devstack.rest_tables import table_request

_SQLSTATE_STATUS = {
    "23503": 409, "23505": 409, "P0001": 400, "42883": 404, "42P01": 404, "25006": 405,
    "22023": 401, "21000": 500, "57P01": 503, "53400": 500,
}
_SQLSTATE_PREFIX_STATUS = {"08": 503, "53": 503, "28": 403, "0L": 403, "0P": 403, "P0": 500}
OBJECT_MEDIA = "application/vnd.pgrst.object+json"


def error_response(code: str, message: str, status: int, details: str | None = None,
                   hint: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return web.json_response(body, status=status, headers={
        "Proxy-Status": f"PostgREST; error={code}", **(headers or {})})


def database_error(exc: asyncpg.PostgresError, role: str) -> web.Response:
    state = exc.sqlstate or "XX000"
    if state == "42501":
        status = 401 if role == "anon" else 403
    elif state.startswith("PT") and state[2:].isdigit():
        status = int(state[2:])
    else:
        status = _SQLSTATE_STATUS.get(state) or _SQLSTATE_PREFIX_STATUS.get(state[:2], 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(state, exc.args[0] if exc.args else str(exc), status,
                          getattr(exc, "detail", None), getattr(exc, "hint", None), headers)


class Rest:
    def __init__(self, pool: asyncpg.Pool, keys: Keys, faults: Faults) -> None:
        self._pool = pool
        self._keys = keys
        self._faults = faults
        self._catalog: Catalog | None = None

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
        return await self._serve(request, self._call_function)

    async def _table(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, functools.partial(table_request, self))

    async def _serve(self, request: web.Request, handler) -> web.StreamResponse:
        status, hang = self._faults.rest_fault()
        if hang:
            await asyncio.sleep(max(0.0, self._faults.rest_until - asyncio.get_running_loop().time()))
        elif status:
            return web.Response(status=status, text=f"<html><body>{status}</body></html>",
                                content_type="text/html")
        try:
            claims = self._claims(request)
        except TokenError as exc:
            code = "PGRST303" if exc.message == "Token has expired" else "PGRST301"
            message = "JWT expired" if code == "PGRST303" else exc.message
            return error_response(code, message, 401, headers={
                "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{message}"'})
        profile_header = "Accept-Profile" if request.method in ("GET", "HEAD") else "Content-Profile"
        profile = request.headers.get(profile_header, SCHEMA)
        if profile != SCHEMA:
            return error_response("PGRST106", f"Invalid schema: {profile}", 406,
                                  hint=f"Only the following schemas are exposed: {SCHEMA}")
        role = claims["role"]
        try:
            return await handler(request, claims)
        except QueryError as exc:
            return error_response(exc.code, exc.message, exc.status, exc.details, exc.hint)
        except asyncpg.PostgresError as exc:
            return database_error(exc, role)

    def _claims(self, request: web.Request) -> dict[str, Any]:
        """The bearer token's claims; an `sb_…` or missing bearer falls back to the apikey, as
        Supabase's gateway translates it."""
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if bearer and not bearer.startswith("sb_"):
            return self._keys.claims(bearer)
        apikey = request.headers.get("apikey") or request.query.get("apikey")
        return self._keys.claims(apikey or bearer or None)

    def transaction(self, request: web.Request, claims: dict[str, Any], readonly: bool
                    ) -> _RequestTransaction:
        """A connection in a transaction set up as PostgREST sets up each request."""
        return _RequestTransaction(self._pool, request, claims, readonly)

    # -- RPC --------------------------------------------------------------------------------

    async def _call_function(self, request: web.Request, claims: dict[str, Any]) -> web.Response:
        name = request.match_info["function"]
        if request.method in ("GET", "HEAD"):
            args: Any = {k: v for k, v in request.query.items()}
        elif request.method == "POST":
            args = await _json_body(request)
        else:
            return error_response("PGRST117", f"Unsupported HTTP method: {request.method}", 405)
        fn = await self._resolve(name, args)
        readonly = request.method in ("GET", "HEAD") or not fn.volatile
        params = Params()
        call = _call_sql(fn, args, params, from_query=request.method != "POST")
        if fn.returns_set and fn.returns_rows:
            source = Source(name, fn.result_columns)
            rest = [(k, v) for k, v in request.query.items() if k not in fn.arg_names or
                    request.method == "POST"]
            sql = (f"select coalesce(json_agg(_r), '[]')::text from (select "
                   f"{select_list(source, request.query.get('select'))} from {call} _s"
                   f"{where(source, rest, params)}{order_by(source, request.query.get('order'))}"
                   f"{paging(request.query.get('limit'), request.query.get('offset'), params)}) _r")
        elif fn.returns_set:
            sql = f"select coalesce(json_agg(_s), '[]')::text from {call} _s"
        elif fn.returns_rows:
            sql = f"select case when _s is null then 'null' else row_to_json(_s)::text end from {call} _s"
        elif fn.is_void:
            sql = f"select 1 from {call} _s"
        else:
            sql = f"select to_json(_s)::text from {call} _s"
        async with self.transaction(request, claims, readonly) as conn:
            body = await conn.fetchval(sql, *params.values)
        if fn.is_void:
            return web.Response(status=204)
        if request.headers.get("Accept", "").startswith(OBJECT_MEDIA) and fn.returns_set:
            rows = json.loads(body)
            if len(rows) != 1:
                raise QueryError("PGRST116", "Cannot coerce the result to a single JSON object",
                                 406, f"The result contains {len(rows)} rows")
            body = json.dumps(rows[0])
        return web.Response(text=body or "null", content_type="application/json", charset="utf-8")

    async def _resolve(self, name: str, args: Any) -> Function:
        for reload in (False, True):
            for fn in (await self.catalog(reload)).functions.get(name, []):
                if fn.single_json_arg or (isinstance(args, dict) and fn.accepts(set(args))):
                    return fn
        names = sorted(args) if isinstance(args, dict) else []
        described = f"{SCHEMA}.{name}(" + ", ".join(names) + ")" if names else \
            f"{SCHEMA}.{name} without parameters"
        details = (f"Searched for the function {SCHEMA}.{name} with parameters {', '.join(names)} "
                   "or with a single unnamed json/jsonb parameter, but no matches were found in "
                   "the schema cache.") if names else (
            f"Searched for the function {SCHEMA}.{name} without parameters or with a single "
            "unnamed json/jsonb parameter, but no matches were found in the schema cache.")
        raise QueryError("PGRST202", f"Could not find the function {described} in the schema cache",
                         404, details)


def _call_sql(fn: Function, args: Any, params: Params, from_query: bool) -> str:
    target = f"{ident(SCHEMA)}.{ident(fn.name)}"
    if fn.single_json_arg:
        return f"{target}({params.add(json.dumps(args))}::{fn.arg_types[0]})"
    parts = []
    for name, kind in zip(fn.arg_names, fn.arg_types, strict=True):
        if name not in args:
            continue
        value = args[name]
        if from_query:
            parts.append(f"{ident(name)} => cast({params.add(value)}::text as {kind})")
        else:
            parts.append(f"{ident(name)} => (select _a.{ident(name)} from jsonb_to_record("
                         f"{params.add(json.dumps({name: value}))}::jsonb) as _a({ident(name)} {kind}))")
    return f"{target}({', '.join(parts)})"


async def _json_body(request: web.Request) -> Any:
    text = await request.text()
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError("PGRST102", "Empty or invalid json", 400, str(exc)) from exc


class _RequestTransaction:
    def __init__(self, pool: asyncpg.Pool, request: web.Request, claims: dict[str, Any],
                 readonly: bool) -> None:
        self._pool, self._request, self._claims, self._readonly = pool, request, claims, readonly

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await self._pool.acquire()
        self._tx = self._conn.transaction(readonly=self._readonly)
        await self._tx.start()
        try:
            headers = {k.lower(): v for k, v in self._request.headers.items()
                       if k.lower() not in ("authorization", "apikey")}
            await self._conn.execute(
                "select set_config('search_path', $1, true), set_config('role', $2, true), "
                "set_config('request.jwt.claims', $3, true), set_config('request.method', $4, true), "
                "set_config('request.path', $5, true), set_config('request.headers', $6, true)",
                SCHEMA, self._claims["role"], json.dumps(self._claims), self._request.method,
                self._request.path, json.dumps(headers),
            )
        except BaseException:
            await self._close(failed=True)
            raise
        return self._conn

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self._close(failed=exc_type is not None)

    async def _close(self, failed: bool) -> None:
        try:
            if failed:
                await self._tx.rollback()
            else:
                await self._tx.commit()
        finally:
            await self._pool.release(self._conn)
