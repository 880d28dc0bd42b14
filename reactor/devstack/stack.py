"""The local stack's one gateway process: REST, Realtime, Auth and the fault admin on one port.

`serve()` runs it inside the caller's event loop (tests use it that way); `reactor devstack`
runs it in the foreground.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from reactor.devstack.auth.endpoint import Auth
from reactor.devstack.cors import cors
from reactor.devstack.faults import Faults
from reactor.devstack.keys import Keys
from reactor.devstack.profile import Profile
from reactor.devstack.realtime.endpoint import Realtime
from reactor.devstack.rest.catalog import SCHEMA
from reactor.devstack.rest.endpoint import Rest


@dataclass
class Stack:
    url: str  # SUPABASE_URL
    port: int
    database_url: str
    keys: Keys
    faults: Faults
    realtime: Realtime
    rest: Rest
    auth: Auth
    profile: Profile


@contextlib.asynccontextmanager
async def serve(
    database_url: str,
    *,
    port: int = 54321,
    host: str = "127.0.0.1",
    keys: Keys | None = None,
    profile: Profile | None = None,
) -> AsyncIterator[Stack]:
    keys = keys or Keys.generate()
    profile = profile or Profile.local()
    faults = Faults()
    async with contextlib.AsyncExitStack() as closing:
        # Closed in reverse: REST's held requests let go, sockets close, HTTP stops, pools close.
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
        closing.push_async_callback(pool.close)
        rest_pool = await asyncpg.create_pool(
            database_url,
            min_size=1,
            # PostgREST's 10 connections for requests (db-pool), and with a schema cache one more
            # for its LISTEN, which PostgREST holds apart from the pool.
            max_size=10 + (1 if profile.schema_cache else 0),
            reset=_end_transaction,
            # rest/backend.py quotes literals for the first, and the second is what every request
            # sets, so plans prepared before a request's settings stay valid under them.
            server_settings={"standard_conforming_strings": "on", "search_path": SCHEMA},
        )
        closing.push_async_callback(rest_pool.close)
        # Auth's own few connections, opened only when a client signs in.
        auth_pool = await asyncpg.create_pool(database_url, min_size=0, max_size=4)
        closing.push_async_callback(auth_pool.close)
        realtime = Realtime(pool, database_url, keys, faults, profile)
        rest = Rest(rest_pool, keys, faults, profile)
        auth = Auth(auth_pool, keys)
        app = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[cors])
        realtime.add_routes(app.router, "/realtime/v1")
        rest.add_routes(app.router, "/rest/v1")
        auth.add_routes(app.router, "/auth/v1")
        app.router.add_post("/_devstack/faults", _fault_admin(keys, faults, realtime))
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        closing.push_async_callback(runner.cleanup)
        closing.push_async_callback(realtime.stop)
        closing.callback(rest.close)
        await realtime.start()
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        actual = runner.addresses[0][1]
        yield Stack(
            f"http://{host}:{actual}", actual, database_url, keys, faults, realtime, rest, auth, profile
        )


async def _end_transaction(conn: asyncpg.Connection) -> None:
    """Reset for the REST pool's connections: REST sets only transaction-local settings, so the
    default RESET ALL round trip on every release would buy nothing."""
    if conn.is_in_transaction():
        await conn.execute("rollback")


def _fault_admin(keys: Keys, faults: Faults, realtime: Realtime):
    """POST /_devstack/faults with the service_role key and one fault as JSON, for example
    {"close": 1006}, {"silent": 20}, {"refuse_websockets": 60}, {"rest_status": 503, "seconds": 5},
    {"rest_hang": 5}, {"drop_fraction": 0.5}, {"replication_down": 10} (Broadcast from Database not
    read: joins wait for "Replication connection established", broadcasts are lost),
    {"message_rate": 1000, "seconds": 10} (postgres changes counted towards the hosted message
    quota; with "broadcasts": true, broadcasts too) or
    {"clear": true}."""

    async def handle(request: web.Request) -> web.Response:
        key = request.headers.get("apikey", "")
        if not (hmac.compare_digest(key, keys.service_role) or hmac.compare_digest(key, keys.secret)):
            return web.json_response({"error": "the service_role key is required"}, status=401)
        try:
            body = await request.json()
            await _apply(faults, realtime, body)
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": f"bad fault request: {exc}"}, status=400)
        return web.json_response({"ok": True})

    return handle


async def _apply(faults: Faults, realtime: Realtime, body: dict) -> None:
    if not isinstance(body, dict) or len(body) == 0:
        raise ValueError("expected a JSON object naming one fault")
    if "close" in body:
        await realtime.close_sockets(int(body["close"]))
    elif "silent" in body:
        faults.go_silent(float(body["silent"]))
    elif "refuse_websockets" in body:
        faults.refuse_websockets(float(body["refuse_websockets"]))
    elif "rest_status" in body:
        faults.fail_rest(int(body["rest_status"]), float(body["seconds"]))
    elif "rest_hang" in body:
        faults.hang_rest(float(body["rest_hang"]))
    elif "message_rate" in body:
        broadcasts = body.get("broadcasts", False)
        if not isinstance(broadcasts, bool):
            raise ValueError(f"broadcasts must be true or false, got {broadcasts!r}")
        faults.count_messages(float(body["message_rate"]), float(body["seconds"]), broadcasts)
    elif "replication_down" in body:
        faults.take_replication_down(float(body["replication_down"]))
    elif "drop_fraction" in body:
        faults.drop_events(float(body["drop_fraction"]))
    elif body.get("clear"):
        faults.clear()
    else:
        raise ValueError(f"unknown fault {sorted(body)}")
