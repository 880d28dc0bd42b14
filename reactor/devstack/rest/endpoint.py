"""The local stack's `/rest/v1`: the subset of PostgREST that the official clients use.

Every request runs in one transaction with `role` and `request.jwt.claims` set from its bearer
token, exactly as PostgREST runs it (backend.py), so Postgres itself enforces grants and row-level
security.
Status codes and error bodies follow PostgREST's (its error reference: SQLSTATE to HTTP status,
`PGRST…` codes, and `PTxyz` for a status a function raises).

The profile's `round_trip_ms` is the distance to a hosted project: half of it passes before a
request is handled (the request travelling), half before its answer leaves (the answer
travelling), for every answer, errors and faults included. The local profile adds nothing.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import asyncpg
from aiohttp import web

from reactor.devstack.faults import Faults
from reactor.devstack.keys import Keys, TokenError
from reactor.devstack.profile import Profile
from reactor.devstack.rest.backend import Backend
from reactor.devstack.rest.catalog import SCHEMA
from reactor.devstack.rest.query import QueryError
from reactor.devstack.rest.rpc import call_function
from reactor.devstack.rest.tables import table_request

_HANG_POLL_SECONDS = 0.05
# SQLSTATE to HTTP status as PostgREST's Error.hs (mapSQLtoHTTP) maps it: an exact code first,
# then its class (first two characters), else 400. 57014, a statement cancelled by
# statement_timeout, is class 57: 500.
_SQLSTATE_STATUS = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "53400": 500,
    "57P01": 503,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
}
_SQLSTATE_CLASS_STATUS = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 500,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}


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
    message = exc.args[0] if exc.args else str(exc)
    status = _status(state, message, role)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(
        state,
        message,
        status,
        getattr(exc, "detail", None),
        getattr(exc, "hint", None),
        headers,
    )


def _status(state: str, message: str, role: str) -> int:
    if state == "42501":
        return 401 if role == "anon" else 403
    if state == "21000":  # 400 only for pg-safeupdate's refusal
        return 400 if message.endswith("requires a WHERE clause") else 500
    if state == "22023":  # 401 only for the token's role that does not exist
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if state.startswith("PT"):
        return int(state[2:]) if state[2:].isdigit() else 500
    return _SQLSTATE_STATUS.get(state) or _SQLSTATE_CLASS_STATUS.get(state[:2], 400)


class Rest:
    def __init__(self, pool: asyncpg.Pool, keys: Keys, faults: Faults, profile: Profile) -> None:
        self._profile = profile
        self._keys = keys
        self._faults = faults
        self._backend = Backend(pool, profile)
        self._half_trip = profile.round_trip_ms / 2000  # seconds each way
        self._closing = False

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        router.add_route("*", prefix + "/rpc/{function}", self._rpc)
        router.add_route("*", prefix + "/{table}", self._table)

    # -- request plumbing -------------------------------------------------------------------

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, functools.partial(call_function, self._backend))

    async def _table(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, functools.partial(table_request, self._backend))

    async def _serve(self, request: web.Request, handler) -> web.StreamResponse:
        if not self._half_trip:
            return await self._answer(request, handler)
        await asyncio.sleep(self._half_trip)  # the request travelling
        response = await self._answer(request, handler)
        await asyncio.sleep(self._half_trip)  # the answer travelling
        return response

    async def _answer(self, request: web.Request, handler) -> web.StreamResponse:
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
        self._backend.close()

    def _claims(self, request: web.Request) -> dict[str, Any]:
        """The bearer token's claims; an `sb_…` or missing bearer falls back to the apikey, as
        Supabase's gateway translates it."""
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if bearer and not bearer.startswith("sb_"):
            return self._keys.claims(bearer)
        apikey = request.headers.get("apikey") or request.query.get("apikey")
        return self._keys.claims(apikey or bearer or None)
