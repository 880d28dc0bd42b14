"""The API gateway's key check in front of `/auth/v1` and Realtime's REST API: a request must
carry one of the project's API keys (`apikey` header or query parameter), or it gets the
gateway's 401 before the service sees it."""

from __future__ import annotations

import hmac

from aiohttp import web

from reactor.devstack.keys import Keys


def refusal(keys: Keys, request: web.Request) -> web.Response | None:
    """The gateway's 401 for a request without one of the project's API keys, or None."""
    key = request.headers.get("apikey") or request.query.get("apikey")
    if not key:
        message, hint = "No API key found in request", "No `apikey` request header or url param was found."
    elif not any(
        hmac.compare_digest(key, known)
        for known in (keys.anon, keys.service_role, keys.publishable, keys.secret)
    ):
        message, hint = "Invalid API key", "Double check your Supabase `anon` or `service_role` API key."
    else:
        return None
    return web.json_response({"message": message, "hint": hint}, status=401)
