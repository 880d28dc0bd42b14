"""Who may use the dashboard, and who did what.

Bound to loopback with no token, anyone on this machine may use it, and the action log names the
remote address. With REACTOR_DASHBOARD_TOKEN (required off loopback) every request needs a token:
`Authorization: Bearer SECRET` for scripts, or a session cookie the login page sets, which holds
the token's name and an HMAC made with its secret, so rotating a token ends its sessions.

Two checks keep other web pages from acting through an operator's browser: on loopback the Host
header must name a loopback host (a DNS-rebinding page cannot pass), and a request that changes
anything must come from the dashboard's own origin (Origin and Sec-Fetch-Site), besides the
cookie being SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from reactor.dashboard.settings import Settings, is_loopback

COOKIE = "reactor_dashboard"
OPEN_PATHS = ("/login", "/static/")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_value(name: str, secret: str) -> str:
    mac = hmac.new(secret.encode(), f"reactor-dashboard-session:{name}".encode(), hashlib.sha256)
    return f"{name}:{mac.hexdigest()}"


class Auth:
    def __init__(self, settings: Settings) -> None:
        self._tokens = settings.tokens
        self._loopback = settings.loopback

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def token_name(self, secret: str) -> str | None:
        found = None
        for name, known in self._tokens:
            if hmac.compare_digest(secret.encode(), known.encode()):
                found = name
        return found

    def session_name(self, cookie: str) -> str | None:
        name = cookie.partition(":")[0]
        for known_name, secret in self._tokens:
            if known_name == name and hmac.compare_digest(cookie, session_value(name, secret)):
                return name
        return None

    def login(self, response: web.StreamResponse, request: web.Request, name: str) -> None:
        secret = dict(self._tokens)[name]
        response.set_cookie(
            COOKIE,
            session_value(name, secret),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )

    def who(self, request: web.Request) -> str | None:
        """The token's name, or the remote address on loopback with no token; None: not allowed."""
        if not self._tokens:
            return f"{request.remote} (loopback)"
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.token_name(header[7:].strip())
        cookie = request.cookies.get(COOKIE)
        return self.session_name(cookie) if cookie else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._loopback and not is_loopback(request.url.host or ""):
            raise web.HTTPMisdirectedRequest(text="this dashboard answers only to a loopback host name\n")
        if request.method not in _SAFE_METHODS and not same_origin(request):
            raise web.HTTPForbidden(text="refused: the request did not come from the dashboard's own pages\n")
        if request.path.startswith(OPEN_PATHS):
            return await handler(request)
        if self.who(request) is None:
            if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
            raise web.HTTPUnauthorized(text="a dashboard token is required\n")
        return await handler(request)


def same_origin(request: web.Request) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"
