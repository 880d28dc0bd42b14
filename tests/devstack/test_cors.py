"""CORS on the gateway, as a browser on another origin meets it: preflights answered 200 before
any key check, allowing any origin and the headers asked for; answers allow any origin and
expose Content-Range and the other headers clients read."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio

ORIGIN = "http://localhost:5173"
ASKED = "authorization,apikey,x-client-info,content-type,prefer,range,accept-profile,x-supabase-api-version"


@pytest.mark.parametrize(
    "path",
    ["/rest/v1/items", "/rest/v1/rpc/add", "/auth/v1/token", "/realtime/v1/api/broadcast"],
)
async def test_preflight_is_answered_without_a_key(devstack, path: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.options(
            devstack.url + path,
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": ASKED},
        )  # fmt: skip
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.headers["Access-Control-Allow-Headers"] == ASKED
    assert {"GET", "POST", "PATCH", "DELETE", "OPTIONS"} <= set(
        answer.headers["Access-Control-Allow-Methods"].split(",")
    )


async def test_answers_allow_any_origin_and_expose_content_range(devstack, shapes) -> None:
    key = devstack.keys.anon
    async with httpx.AsyncClient() as http:
        read = await http.get(
            f"{devstack.url}/rest/v1/items?select=id",
            headers={
                "Origin": ORIGIN,
                "apikey": key,
                "Authorization": f"Bearer {key}",
                "Prefer": "count=exact",
            },
        )
        refused = await http.get(f"{devstack.url}/auth/v1/user", headers={"Origin": ORIGIN})
        sent = await http.post(
            f"{devstack.url}/realtime/v1/api/broadcast",
            json={"messages": [{"topic": "t", "event": "e", "payload": {}}]},
            headers={"Origin": ORIGIN, "apikey": key},
        )
    assert (read.status_code, read.headers["Content-Range"]) == (200, "0-2/3")
    assert (refused.status_code, sent.status_code) == (401, 202)
    for answer in (read, refused, sent):
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        exposed = {h.strip().lower() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"content-range", "range-unit", "x-supabase-api-version"} <= exposed
