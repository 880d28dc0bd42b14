"""A stand-in quote API: 2 requests a second per client (429 beyond), and no quotes over
100,000 km (422). `python -m examples.vehicle_quotes.fake_api` serves it on port 8701."""

from __future__ import annotations

import time

from aiohttp import web

from examples.fake_server import run_forever

LIMIT_PER_SECOND = 2
MAX_MILEAGE = 100_000


class QuoteApi:
    def __init__(self) -> None:
        self.accepted: list[float] = []  # monotonic times of the requests it answered
        self.throttled = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/quote", self.quote)
        return app

    async def quote(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if len([t for t in self.accepted if now - t < 1.0]) >= LIMIT_PER_SECOND:
            self.throttled += 1
            return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})
        self.accepted.append(now)
        body = await request.json()
        if body["mileage"] > MAX_MILEAGE:
            return web.json_response({"error": f"no lease offers above {MAX_MILEAGE} km"}, status=422)
        monthly = round(200 + body["mileage"] / 1000 * 3 - body["term"] * 1.5, 2)
        return web.json_response({**body, "monthly": monthly})


if __name__ == "__main__":
    run_forever(QuoteApi().app(), 8701)
