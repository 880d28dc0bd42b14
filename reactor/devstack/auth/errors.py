"""Auth's errors as GoTrue answers them: `{code, error_code, msg}` by default, `{code, message}`
with a string code for a client that asks for API version 2024-01-01 (supabase-js and supabase-py
both do), and OAuth's `{error, error_description}` where GoTrue answers that."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

API_VERSION_HEADER = "X-Supabase-Api-Version"
API_VERSION = "2024-01-01"


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reasons = list(reasons)  # a weak password's reasons

    def response(self, request: web.Request) -> web.Response:
        headers = {"x-sb-error-code": self.code}
        if _asks_for_versioned_errors(request):
            body: dict = {"code": self.code, "message": self.message}
            headers[API_VERSION_HEADER] = API_VERSION
        else:
            body = {"code": self.status, "error_code": self.code, "msg": self.message}
        if self.reasons:
            body["weak_password"] = {"reasons": self.reasons}
        return web.json_response(body, status=self.status, headers=headers)


class OAuthError(Exception):
    """An error GoTrue words as OAuth does; always 400."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def response(self, request: web.Request) -> web.Response:
        return web.json_response({"error": self.error, "error_description": self.description}, status=400)


def _asks_for_versioned_errors(request: web.Request) -> bool:
    """Whether the request names API version 2024-01-01 or later (a date, YYYY-MM-DD)."""
    asked = request.headers.get(API_VERSION_HEADER, "")
    return len(asked) == 10 and asked[4] == asked[7] == "-" and asked >= API_VERSION


def bad_request(code: str, message: str) -> AuthError:
    return AuthError(400, code, message)


def invalid_credentials() -> AuthError:
    return bad_request("invalid_credentials", "Invalid login credentials")
