"""The local stack's API keys and token checks, as a Supabase project hands them out.

One HS256 secret signs the legacy `anon` and `service_role` keys and users' access tokens. The
opaque `sb_secret_…` / `sb_publishable_…` keys stand for service_role and anon, as Supabase's
gateway translates them. Errors carry the messages of Realtime's socket handshake.
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

_TEN_YEARS = 10 * 365 * 24 * 3600


class TokenError(Exception):
    """A token the real service would refuse; `status` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Keys:
    jwt_secret: str
    secret: str  # sb_secret_…, maps to service_role
    publishable: str  # sb_publishable_…, maps to anon

    @classmethod
    def generate(cls) -> Keys:
        return cls(
            jwt_secret=secrets.token_urlsafe(48),
            secret="sb_secret_" + secrets.token_urlsafe(24),
            publishable="sb_publishable_" + secrets.token_urlsafe(24),
        )

    @property
    def anon(self) -> str:
        return self._api_key("anon")

    @property
    def service_role(self) -> str:
        return self._api_key("service_role")

    def _api_key(self, role: str) -> str:
        # Fixed iat/exp so the key is the same string every time the stack starts.
        iat = 1_700_000_000
        return self.sign({"iss": "supabase-demo", "role": role, "iat": iat, "exp": iat + _TEN_YEARS})

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def user_token(self, user_id: str, *, expires_in: int = 3600, **claims: Any) -> str:
        """An `authenticated` access token for `user_id`, as Supabase Auth issues after sign-in."""
        now = int(time.time())
        return self.sign(
            {
                "sub": str(user_id),
                "role": "authenticated",
                "aud": "authenticated",
                "iat": now,
                "exp": now + expires_in,
                **claims,
            }
        )

    def claims(self, token: str | None) -> dict[str, Any]:
        """The verified claims of `token`, or TokenError with the real service's message."""
        if not token:
            raise TokenError("API key is missing")
        if token == self.secret:
            return {"role": "service_role", "iss": "supabase", "exp": int(time.time()) + 3600}
        if token == self.publishable:
            return {"role": "anon", "iss": "supabase", "exp": int(time.time()) + 3600}
        claims = dict(_verified(token, self.jwt_secret))
        if not isinstance(claims.get("role"), str) or not isinstance(claims.get("exp"), int | float):
            raise TokenError("Fields `role` and `exp` are required in JWT")
        if claims["exp"] <= time.time():
            raise TokenError("Token has expired")
        return claims


@functools.lru_cache(maxsize=1024)
def _verified(token: str, secret: str) -> dict[str, Any]:
    """The claims of a token signed with `secret`. Cached: the same few keys and user tokens come
    with every request, and expiry is checked by the caller on each use."""
    try:
        return jwt.decode(
            token, secret, algorithms=["HS256"], options={"verify_exp": False, "verify_aud": False}
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenError("Failed to validate JWT signature") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("The token provided is not a valid JWT") from exc


def load_or_create(path: Path) -> Keys:
    """The keys saved at `path`, or new ones saved there, so clients keep working across restarts."""
    if path.exists():
        return Keys(**json.loads(path.read_text()))
    keys = Keys.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"jwt_secret": keys.jwt_secret, "secret": keys.secret, "publishable": keys.publishable})
    )
    path.chmod(0o600)
    return keys
