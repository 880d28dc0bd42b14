"""Users in `auth.users`, as GoTrue keeps them and shows them: emails lowercased and confirmed at
sign-up (the local stack sends no mail), passwords hashed in the database (supabase.sql), and
the user object every auth answer carries."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from reactor.devstack.auth.errors import AuthError, bad_request, invalid_credentials

AUDIENCE = "authenticated"
MIN_PASSWORD_LENGTH = 6  # GoTrue's default
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_COLUMNS = """id, aud, role, email, email_confirmed_at, last_sign_in_at, raw_app_meta_data,
    raw_user_meta_data, created_at, updated_at, is_anonymous"""
_IDENTITY_NAMESPACE = uuid.UUID("6d1c9f0e-33a8-4c59-9d8e-6f1f1a1b2c3d")


def check_password(password: str) -> None:
    """A new password as GoTrue's defaults judge it."""
    if not password:
        raise bad_request("validation_failed", "Signup requires a valid password")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise bad_request(
            "validation_failed", f"Password cannot be longer than {MAX_PASSWORD_BYTES} characters"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        message = f"Password should be at least {MIN_PASSWORD_LENGTH} characters."
        raise AuthError(422, "weak_password", message, reasons=["length"])


def valid_email(email: str) -> str:
    if len(email) > 255:
        raise bad_request("validation_failed", "An email address is too long")
    if not _EMAIL.match(email):
        raise bad_request("validation_failed", "Unable to validate email address: invalid format")
    return email.lower()


async def create_with_password(
    conn: asyncpg.Connection, email: str, password: str, data: dict[str, Any]
) -> asyncpg.Record:
    """A confirmed email user, or 422 when the address is taken."""
    if await conn.fetchval("select 1 from auth.users where lower(email) = $1", email):
        raise _already_registered()
    user = await conn.fetchrow(
        f"""insert into auth.users (id, aud, role, email, encrypted_password, email_confirmed_at,
                                   raw_app_meta_data, raw_user_meta_data)
            values (gen_random_uuid(), $1, 'authenticated', $2,
                    extensions.reactor_devstack_hash_password($3), now(), $4::jsonb, $5::jsonb)
            on conflict (email) do nothing
            returning {_COLUMNS}""",
        AUDIENCE,
        email,
        password,
        json.dumps({"provider": "email", "providers": ["email"]}),
        json.dumps(data),
    )
    if user is None:
        raise _already_registered()
    return user


async def create_anonymous(conn: asyncpg.Connection, data: dict[str, Any]) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""insert into auth.users (id, aud, role, raw_user_meta_data, is_anonymous)
            values (gen_random_uuid(), $1, 'authenticated', $2::jsonb, true)
            returning {_COLUMNS}""",
        AUDIENCE,
        json.dumps(data),
    )


async def by_password(conn: asyncpg.Connection, email: str, password: str) -> asyncpg.Record:
    """The user with this email and password; 400 `invalid_credentials` for any other pair."""
    user = await conn.fetchrow(
        f"""select {_COLUMNS},
                   extensions.reactor_devstack_password_matches($2, encrypted_password) as matches
            from auth.users where lower(email) = lower($1) and aud = $3""",
        email,
        password,
        AUDIENCE,
    )
    if user is None or not user["matches"]:
        raise invalid_credentials()
    return user


async def by_id(conn: asyncpg.Connection, user_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"select {_COLUMNS} from auth.users where id = $1", user_id)


async def signed_in(conn: asyncpg.Connection, user_id: uuid.UUID) -> asyncpg.Record:
    return await conn.fetchrow(
        f"update auth.users set last_sign_in_at = now() where id = $1 returning {_COLUMNS}", user_id
    )


def metadata(user: asyncpg.Record) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's app_metadata and user_metadata."""
    return _json(user["raw_app_meta_data"]), _json(user["raw_user_meta_data"])


def user_json(user: asyncpg.Record) -> dict[str, Any]:
    """The user object of GoTrue's answers; unset times are left out, as GoTrue leaves them."""
    app_metadata, user_metadata = metadata(user)
    confirmed = timestamp(user["email_confirmed_at"])
    body: dict[str, Any] = {
        "id": str(user["id"]),
        "aud": user["aud"],
        "role": user["role"],
        "email": user["email"] or "",
        "email_confirmed_at": confirmed,
        "phone": "",
        "confirmed_at": confirmed,
        "last_sign_in_at": timestamp(user["last_sign_in_at"]),
        "app_metadata": app_metadata,
        "user_metadata": user_metadata,
        "identities": _identities(user),
        "created_at": timestamp(user["created_at"]),
        "updated_at": timestamp(user["updated_at"]),
        "is_anonymous": user["is_anonymous"],
    }
    return {name: value for name, value in body.items() if value is not None}


def _identities(user: asyncpg.Record) -> list[dict[str, Any]]:
    """An email user's one identity, derived from the row (the local stack keeps no identities
    table); an anonymous user has none."""
    if not user["email"]:
        return []
    user_id = str(user["id"])
    return [
        {
            "identity_id": str(uuid.uuid5(_IDENTITY_NAMESPACE, user_id)),
            "id": user_id,
            "user_id": user_id,
            "identity_data": {
                "email": user["email"],
                "email_verified": False,
                "phone_verified": False,
                "sub": user_id,
            },
            "provider": "email",
            "last_sign_in_at": timestamp(user["created_at"]),
            "created_at": timestamp(user["created_at"]),
            "updated_at": timestamp(user["created_at"]),
            "email": user["email"],
        }
    ]


def timestamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(value: str | dict | None) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return loaded if isinstance(loaded, dict) else {}


def _already_registered() -> AuthError:
    return AuthError(422, "user_already_exists", "User already registered")
