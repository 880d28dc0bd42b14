"""A stand-in cache whose invalidation endpoint fails the first `failures` calls with 503.
`python -m examples.stats_refresh.fake_api` serves it on port 8702."""

from __future__ import annotations

from aiohttp import web

from examples.fake_server import run_forever


class Cache:
    def __init__(self, failures: int = 2) -> None:
        self.failures = failures
        self.calls: list[list[str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/invalidate", self.invalidate)
        return app

    async def invalidate(self, request: web.Request) -> web.Response:
        self.calls.append((await request.json())["keys"])
        if len(self.calls) <= self.failures:
            return web.json_response({"error": "cache node restarting"}, status=503)
        return web.json_response({"dropped": len(self.calls[-1])})


if __name__ == "__main__":
    run_forever(Cache().app(), 8702)
