"""The local stack's /auth/v1 with the unmodified supabase-py auth client, and its refusals in
GoTrue's words: sessions whose tokens REST's RLS accepts, rotation, sign-out, and bodies and keys
that are refused, never with a 500."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import jwt
import pytest
from supabase import AsyncClient, acreate_client
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse"
VERSIONED = {"X-Supabase-Api-Version": "2024-01-01"}


def an_email() -> str:
    return f"ada-{uuid.uuid4().hex[:8]}@example.com"


async def anon_client(devstack) -> AsyncClient:
    return await acreate_client(devstack.url, devstack.keys.anon)


def claims(devstack, token: str) -> dict:
    return jwt.decode(token, devstack.keys.jwt_secret, algorithms=["HS256"], audience="authenticated")


async def test_sign_up_signs_in_a_user_whom_rls_knows(devstack, db: asyncpg.Connection):
    await db.execute("select reactor.allow_insert('jobs', 'send_email')")
    sb = await anon_client(devstack)
    email = an_email()
    signed = await sb.auth.sign_up(
        {"email": email.upper(), "password": PASSWORD, "options": {"data": {"n": 1}}}
    )
    user, session = signed.user, signed.session
    assert session is not None and session.token_type == "bearer" and session.expires_in == 3600
    assert (user.email, user.aud, user.role, user.is_anonymous) == (
        email,
        "authenticated",
        "authenticated",
        False,
    )
    assert user.user_metadata == {"n": 1} and user.app_metadata["provider"] == "email"
    assert user.email_confirmed_at is not None and [i.provider for i in user.identities] == ["email"]
    token = claims(devstack, session.access_token)
    assert (token["sub"], token["role"], token["email"], token["is_anonymous"]) == (
        user.id,
        "authenticated",
        email,
        False,
    )
    assert token["exp"] == session.expires_at and token["session_id"]

    inserted = await sb.table("jobs").insert({"job_type": "send_email"}).select("id, user_id").execute()
    assert inserted.data[0]["user_id"] == user.id  # auth.uid() under the session's token
    row = await db.fetchrow(
        "select encrypted_password, is_anonymous from auth.users where id = $1", uuid.UUID(user.id)
    )
    assert row["encrypted_password"].startswith("$2a$") and row["is_anonymous"] is False


async def test_sign_in_refresh_get_user_and_sign_out(devstack):
    email = an_email()
    await (await anon_client(devstack)).auth.sign_up({"email": email, "password": PASSWORD})
    sb = await anon_client(devstack)
    first = (await sb.auth.sign_in_with_password({"email": email, "password": PASSWORD})).session
    assert (await sb.auth.get_user()).user.email == email

    refreshed = (await sb.auth.refresh_session()).session
    assert refreshed.refresh_token != first.refresh_token
    assert (
        claims(devstack, refreshed.access_token)["session_id"]
        == claims(devstack, first.access_token)["session_id"]
    )
    assert (await sb.auth.get_user(refreshed.access_token)).user.id == first.user.id

    await sb.auth.sign_out()
    assert await sb.auth.get_session() is None
    with pytest.raises(AuthApiError) as gone:
        await sb.auth.get_user(refreshed.access_token)
    with pytest.raises(AuthApiError) as revoked:
        await sb.auth.refresh_session(refreshed.refresh_token)
    assert (gone.value.status, gone.value.code) == (403, "session_not_found")
    assert (revoked.value.status, revoked.value.code) == (400, "refresh_token_not_found")


async def test_wrong_password_taken_email_and_weak_password_are_refused(devstack):
    email = an_email()
    sb = await anon_client(devstack)
    await sb.auth.sign_up({"email": email, "password": PASSWORD})
    with pytest.raises(AuthApiError) as wrong:
        await sb.auth.sign_in_with_password({"email": email, "password": "wrong horse"})
    with pytest.raises(AuthApiError) as unknown:
        await sb.auth.sign_in_with_password({"email": an_email(), "password": PASSWORD})
    with pytest.raises(AuthApiError) as taken:
        await sb.auth.sign_up({"email": email, "password": PASSWORD})
    with pytest.raises(AuthWeakPasswordError) as weak:
        await sb.auth.sign_up({"email": an_email(), "password": "short"})
    assert [(e.value.status, e.value.code, e.value.message) for e in (wrong, unknown, taken)] == [
        (400, "invalid_credentials", "Invalid login credentials"),
        (400, "invalid_credentials", "Invalid login credentials"),
        (422, "user_already_exists", "User already registered"),
    ]
    assert (weak.value.status, weak.value.reasons) == (422, ["length"])


async def test_anonymous_sign_in_is_an_authenticated_user_marked_anonymous(devstack, db: asyncpg.Connection):
    sb = await anon_client(devstack)
    signed = await sb.auth.sign_in_anonymously()
    assert (signed.user.is_anonymous, signed.user.email, signed.user.identities) == (True, "", [])
    token = claims(devstack, signed.session.access_token)
    assert (token["role"], token["is_anonymous"], token["amr"][0]["method"]) == (
        "authenticated",
        True,
        "anonymous",
    )
    assert await db.fetchval("select is_anonymous from auth.users where id = $1", uuid.UUID(signed.user.id))
    assert (await sb.auth.get_user()).user.id == signed.user.id


async def test_a_refresh_token_used_twice_answers_the_same_child_then_is_refused_later(
    devstack, db: asyncpg.Connection
):
    async with httpx.AsyncClient(
        base_url=devstack.url + "/auth/v1", headers={"apikey": devstack.keys.anon}
    ) as http:
        session = (await http.post("/signup", json={})).json()
        refresh = {"refresh_token": session["refresh_token"]}
        child = (await http.post("/token?grant_type=refresh_token", json=refresh)).json()["refresh_token"]
        again = (await http.post("/token?grant_type=refresh_token", json=refresh)).json()["refresh_token"]
        assert again == child != session["refresh_token"]
        await db.execute("update auth.refresh_tokens set updated_at = now() - interval '1 minute'")
        await db.execute("update auth.refresh_tokens set revoked = true where token = $1", child)
        reused = await http.post("/token?grant_type=refresh_token", json=refresh, headers=VERSIONED)
        assert (reused.status_code, reused.json()["code"]) == (400, "refresh_token_already_used")
        assert await db.fetchval("select bool_and(revoked) from auth.refresh_tokens") is True


async def test_an_api_key_is_required_as_the_gateway_requires_it(devstack):
    user = devstack.keys.user_token(str(uuid.uuid4()))
    async with httpx.AsyncClient(base_url=devstack.url + "/auth/v1") as http:
        missing = await http.post("/signup", json={})
        wrong = await http.post("/signup", json={}, headers={"apikey": user})
        answered = [
            (await http.post("/signup", json={}, headers={"apikey": key})).status_code
            for key in (devstack.keys.anon, devstack.keys.service_role, devstack.keys.publishable)
        ]
    assert (missing.status_code, missing.json()["message"]) == (401, "No API key found in request")
    assert (wrong.status_code, wrong.json()["message"]) == (401, "Invalid API key")
    assert answered == [200, 200, 200]


MALFORMED = [
    ("/signup", b"", 400, "bad_json"),
    ("/signup", b"{not json", 400, "bad_json"),
    ("/signup", b"[]", 400, "bad_json"),
    ("/signup", b'{"email": 1, "password": "correct horse"}', 400, "bad_json"),
    ("/signup", b'{"data": "x"}', 400, "bad_json"),
    ("/signup", b'{"email": "ada@example.com"}', 400, "validation_failed"),
    ("/signup", b'{"email": "not an email", "password": "correct horse"}', 400, "validation_failed"),
    ("/signup", b'{"phone": "+15550100", "password": "correct horse"}', 400, "phone_provider_disabled"),
    ("/token?grant_type=password", b"[[[[", 400, "bad_json"),
    ("/token?grant_type=password", b'{"password": "correct horse"}', 400, "validation_failed"),
    ("/token?grant_type=password", b'{"email": ["a"]}', 400, "bad_json"),
    ("/token?grant_type=refresh_token", b'{"refresh_token": "nope"}', 400, "refresh_token_not_found"),
    ("/token?grant_type=pkce", b"{}", 400, "invalid_credentials"),
    ("/token", b"{}", 400, "invalid_credentials"),
]


async def test_malformed_requests_are_refused_in_both_error_shapes(devstack):
    async with httpx.AsyncClient(
        base_url=devstack.url + "/auth/v1", headers={"apikey": devstack.keys.anon}
    ) as http:
        for path, body, status, code in MALFORMED:
            versioned = await http.post(path, content=body, headers=VERSIONED)
            legacy = await http.post(path, content=body)
            seen = (versioned.status_code, versioned.json()["code"], versioned.headers["x-sb-error-code"])
            assert seen == (status, code, code), (path, body)
            assert versioned.headers["X-Supabase-Api-Version"] == "2024-01-01" and versioned.json()["message"]
            assert (legacy.status_code, legacy.json()["code"], legacy.json()["error_code"]) == (
                status,
                status,
                code,
            )
            assert legacy.json()["msg"] == versioned.json()["message"]


async def test_user_and_logout_refuse_tokens_in_gotrue_words(devstack):
    stranger = devstack.keys.user_token(str(uuid.uuid4()))
    cases = {
        "none": {},
        "anon": {"Authorization": f"Bearer {devstack.keys.anon}"},
        "forged": {"Authorization": "Bearer " + jwt.encode({"sub": str(uuid.uuid4())}, "x" * 32)},
        "expired": {"Authorization": f"Bearer {devstack.keys.user_token(str(uuid.uuid4()), expires_in=-10)}"},
        "stranger": {"Authorization": f"Bearer {stranger}"},
    }
    async with httpx.AsyncClient(
        base_url=devstack.url + "/auth/v1", headers={"apikey": devstack.keys.anon, **VERSIONED}
    ) as http:
        seen = {name: await http.get("/user", headers=headers) for name, headers in cases.items()}
        scope = await http.post("/logout?scope=everywhere", headers=cases["stranger"])
        other = await http.post("/verify", json={})
    assert {name: (r.status_code, r.json()["code"]) for name, r in seen.items()} == {
        "none": (401, "no_authorization"),
        "anon": (403, "bad_jwt"),
        "forged": (403, "bad_jwt"),
        "expired": (403, "bad_jwt"),
        "stranger": (403, "user_not_found"),
    }
    assert (scope.status_code, scope.json()["code"]) == (400, "validation_failed")
    assert other.status_code == 404
