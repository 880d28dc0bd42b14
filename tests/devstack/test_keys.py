"""The local stack's keys: what they are, how they persist, how tokens are judged."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest

from reactor.devstack.keys import Keys, TokenError, load_or_create


def test_keys_persist_so_clients_keep_working_across_restarts(tmp_path: Path):
    first = load_or_create(tmp_path / "ds" / "keys.json")
    again = load_or_create(tmp_path / "ds" / "keys.json")
    assert (again.anon, again.service_role, again.secret, again.publishable) == (
        first.anon,
        first.service_role,
        first.secret,
        first.publishable,
    )
    assert (tmp_path / "ds" / "keys.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "ds" / "keys.json").read_text())["jwt_secret"] == first.jwt_secret


def test_api_keys_look_like_supabases():
    keys = Keys.generate()
    for key, role in ((keys.anon, "anon"), (keys.service_role, "service_role")):
        claims = jwt.decode(key, keys.jwt_secret, algorithms=["HS256"])
        assert (jwt.get_unverified_header(key)["alg"], claims["role"]) == ("HS256", role)
        assert claims["exp"] - claims["iat"] >= 9 * 365 * 24 * 3600
    assert keys.secret.startswith("sb_secret_") and keys.publishable.startswith("sb_publishable_")


def test_opaque_keys_stand_for_service_role_and_anon():
    keys = Keys.generate()
    assert keys.claims(keys.secret)["role"] == "service_role"
    assert keys.claims(keys.publishable)["role"] == "anon"
    with pytest.raises(TokenError):
        keys.claims(Keys.generate().secret)


def test_user_token_is_an_authenticated_users_access_token():
    keys = Keys.generate()
    claims = keys.claims(keys.user_token("u-1", email="a@example.com"))
    assert {k: claims[k] for k in ("sub", "role", "aud", "email")} == {
        "sub": "u-1",
        "role": "authenticated",
        "aud": "authenticated",
        "email": "a@example.com",
    }


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda k: None, "API key is missing"),
        (lambda k: k.user_token("u", expires_in=-1), "Token has expired"),
        (lambda k: k.sign({"exp": 4102444800}), "Fields `role` and `exp` are required in JWT"),
        (lambda k: k.sign({"role": "anon"}), "Fields `role` and `exp` are required in JWT"),
        (lambda k: "a.b.c", "The token provided is not a valid JWT"),
        (lambda k: Keys.generate().anon, "Failed to validate JWT signature"),
    ],
)
def test_refused_tokens_carry_realtimes_messages_and_401(make, message):
    keys = Keys.generate()
    with pytest.raises(TokenError) as caught:
        keys.claims(make(keys))
    assert (caught.value.message, caught.value.status) == (message, 401)
