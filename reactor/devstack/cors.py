"""CORS on the gateway, so that a browser app served from another origin can call the stack.

Supabase's API gateway runs Kong's `cors` plugin with its defaults on every API route (`/rest/v1`,
`/auth/v1`, `/realtime/v1`; the plugin list of Supabase's self-hosting Kong configuration), ahead
of the key check: a preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) is
answered 200 by the gateway itself, allowing any origin, the default methods, and the headers
the browser asked for; every other answer allows any origin. PostgREST and Auth add which
response headers a script may read (PostgREST: Content-Range and Range-Unit among others; Auth:
X-Total-Count, Link and X-Supabase-Api-Version), so every answer here exposes their union.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

PREFIXES = ("/rest/v1", "/auth/v1", "/realtime/v1")
METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"  # Kong's default `methods`
# When a preflight names no headers: everything supabase-js and supabase-py send.
ALLOWED_HEADERS = (
    "authorization,apikey,x-client-info,content-type,accept,accept-profile,content-profile,prefer,"
    "range,range-unit,x-supabase-api-version,x-upsert,cache-control"
)
EXPOSED_HEADERS = (
    "Content-Encoding,Content-Location,Content-Range,Content-Type,Date,Location,Server,"
    "Transfer-Encoding,Range-Unit,X-Total-Count,Link,X-Supabase-Api-Version"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _covered(request: web.Request) -> bool:
    return any(request.path == p or request.path.startswith(p + "/") for p in PREFIXES)


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _covered(request):
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        asked = request.headers.get("Access-Control-Request-Headers")
        return web.Response(
            status=200,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": METHODS,
                "Access-Control-Allow-Headers": asked or ALLOWED_HEADERS,
            },
        )
    response = await handler(request)
    if not response.prepared:  # a websocket is already under way; HTTP answers are not
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        response.headers.setdefault("Access-Control-Expose-Headers", EXPOSED_HEADERS)
    return response
