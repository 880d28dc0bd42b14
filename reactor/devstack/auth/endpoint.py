"""The local stack's `/auth/v1`: sign-up (with a password, or anonymous), the password and
refresh-token grants, the signed-in user and sign-out, answered as GoTrue answers them with the
settings of `supabase start`: email confirmation off, so a sign-up is signed in at once.

Every request must carry an API key, as Supabase's gateway requires before it reaches Auth: the
anon or service_role key, or their `sb_publishable_…` / `sb_secret_…` forms.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import jwt
from aiohttp import web

from reactor.devstack import apikey
from reactor.devstack.auth import sessions, users
from reactor.devstack.auth.body import Body
from reactor.devstack.auth.errors import AuthError, OAuthError, bad_request
from reactor.devstack.keys import Keys

_BEARER = re.compile(r"^[Bb]earer (\S+)$")
Handler = Callable[[web.Request, asyncpg.Connection], Awaitable[web.StreamResponse]]


class Auth:
    def __init__(self, pool: asyncpg.Pool, keys: Keys) -> None:
        self._pool = pool
        self._keys = keys

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        router.add_post(prefix + "/signup", self._serving(self._signup))
        router.add_post(prefix + "/token", self._serving(self._token))
        router.add_get(prefix + "/user", self._serving(self._user))
        router.add_post(prefix + "/logout", self._serving(self._logout))
        router.add_route("*", prefix + "/{path:.*}", self._serving(_not_found))

    def _serving(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            refused = self._refused_key(request)
            if refused is not None:
                return refused
            try:
                async with self._pool.acquire() as conn:
                    return await handler(request, conn)
            except (AuthError, OAuthError) as exc:
                return exc.response(request)
            except asyncpg.PostgresError:
                failed = AuthError(500, "unexpected_failure", "Database error querying schema")
                return failed.response(request)

        return serve

    def _refused_key(self, request: web.Request) -> web.Response | None:
        """The gateway's 401 for a request without one of the project's API keys."""
        return apikey.refusal(self._keys, request)

    # -- the endpoints ----------------------------------------------------------------------

    async def _signup(self, request: web.Request, conn: asyncpg.Connection) -> web.Response:
        body = Body(await request.read())
        email, phone, password = body.text("email"), body.text("phone"), body.text("password")
        data = body.mapping("data")
        if not email and not phone:
            user = await users.create_anonymous(conn, data)
            return web.json_response(await sessions.start(conn, self._keys, user, _issuer(request)))
        users.check_password(password)
        if email and phone:
            raise bad_request(
                "validation_failed", "Only an email address or phone number should be provided on signup."
            )
        if phone:
            raise bad_request("phone_provider_disabled", "Phone signups are disabled")
        user = await users.create_with_password(conn, users.valid_email(email), password, data)
        return web.json_response(await sessions.start(conn, self._keys, user, _issuer(request)))

    async def _token(self, request: web.Request, conn: asyncpg.Connection) -> web.Response:
        grant = request.query.get("grant_type", "")
        if grant == "password":
            body = Body(await request.read())
            email, phone = body.text("email"), body.text("phone")
            if email and phone:
                raise bad_request(
                    "validation_failed", "Only an email address or phone number should be provided on login."
                )
            if phone:
                raise AuthError(422, "phone_provider_disabled", "Phone logins are disabled")
            if not email:
                raise bad_request("validation_failed", "missing email or phone")
            user = await users.by_password(conn, email, body.text("password"))
            return web.json_response(await sessions.start(conn, self._keys, user, _issuer(request)))
        if grant == "refresh_token":
            token = Body(await request.read()).text("refresh_token")
            if not token:
                raise OAuthError("invalid_request", "refresh_token required")
            return web.json_response(await sessions.refresh(conn, self._keys, token, _issuer(request)))
        raise bad_request("invalid_credentials", "unsupported_grant_type")

    async def _user(self, request: web.Request, conn: asyncpg.Connection) -> web.Response:
        user, _ = await self._authenticated(request, conn)
        return web.json_response(users.user_json(user))

    async def _logout(self, request: web.Request, conn: asyncpg.Connection) -> web.Response:
        scope = request.query.get("scope") or "global"
        if scope not in sessions.SCOPES:
            raise bad_request("validation_failed", f'Unsupported logout scope "{scope}"')
        user, session_id = await self._authenticated(request, conn)
        await sessions.end(conn, user["id"], session_id, scope)
        return web.Response(status=204)

    async def _authenticated(
        self, request: web.Request, conn: asyncpg.Connection
    ) -> tuple[asyncpg.Record, uuid.UUID | None]:
        """The bearer token's user and session, refused in GoTrue's words."""
        bearer = _BEARER.match(request.headers.get("Authorization", ""))
        if bearer is None:
            raise AuthError(401, "no_authorization", "This endpoint requires a valid Bearer token")
        claims = self._claims(bearer.group(1))
        if not claims.get("sub"):
            raise AuthError(403, "bad_jwt", "invalid claim: missing sub claim")
        user_id = _uuid(claims["sub"])
        if user_id is None:
            raise bad_request("bad_jwt", "invalid claim: sub claim must be a UUID")
        user = await users.by_id(conn, user_id)
        if user is None:
            raise AuthError(403, "user_not_found", "User from sub claim in JWT does not exist")
        named = claims.get("session_id")
        if not named or named == str(uuid.UUID(int=0)):
            return user, None
        session_id = _uuid(named)
        if session_id is None:
            raise AuthError(403, "bad_jwt", "invalid claim: session_id claim must be a UUID")
        if not await sessions.exists(conn, session_id):
            raise AuthError(403, "session_not_found", "Session from session_id claim in JWT does not exist")
        return user, session_id

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token, self._keys.jwt_secret, algorithms=["HS256"], options={"verify_aud": False}
            )
        except jwt.ExpiredSignatureError:
            reason = "token has invalid claims: token is expired"
        except jwt.InvalidSignatureError:
            reason = "token signature is invalid: signature is invalid"
        except jwt.PyJWTError:
            reason = "token is malformed: could not parse the token"
        else:
            return claims
        raise AuthError(403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {reason}")


async def _not_found(request: web.Request, conn: asyncpg.Connection) -> web.Response:
    """What the local stack's Auth does not serve (OTP, magic links, OAuth, MFA, admin): GoTrue's
    router answer for a path it does not know."""
    return web.Response(status=404, text="404 page not found\n")


def _issuer(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/auth/v1"


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
