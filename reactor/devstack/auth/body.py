"""Request bodies as GoTrue reads them: a JSON object whose named fields must have the expected
type, where null stands for the empty value and fields it does not know are ignored."""

from __future__ import annotations

import json
from typing import Any

from reactor.devstack.auth.errors import AuthError, bad_request


class Body:
    def __init__(self, raw: bytes) -> None:
        if not raw.strip():
            raise _bad_json("unexpected end of JSON input")
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _bad_json(str(exc)) from exc
        if parsed is not None and not isinstance(parsed, dict):
            raise _bad_json(f"cannot unmarshal {type(parsed).__name__} into an object")
        self._fields: dict[str, Any] = parsed or {}

    def text(self, name: str) -> str:
        value = self._fields.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _bad_json(f"field {name} must be a string")
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value = self._fields.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _bad_json(f"field {name} must be an object")
        return value


def _bad_json(reason: str) -> AuthError:
    return bad_request("bad_json", f"Could not parse request body as JSON: {reason}")
