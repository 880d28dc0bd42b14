"""A stand-in enrichment API that fails each company's first lookup with 503, as a flaky upstream
does, and knows only the companies below. `python -m examples.account_enrichment.fake_api`
serves it on port 8704."""

from __future__ import annotations

from aiohttp import web

from examples.fake_server import run_forever

COMPANIES = {
    "acme.test": {"name": "Acme Ltd", "employees": 120, "people": ["Ada Lovelace", "Alan Turing"]},
}


class EnrichmentApi:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/companies/{domain}", self.company)
        app.router.add_get("/companies/{domain}/people", self.people)
        return app

    async def company(self, request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        self.calls.append(request.path)
        if domain not in COMPANIES:
            return web.json_response({"error": "unknown company"}, status=404)
        if self.calls.count(request.path) == 1:
            return web.json_response({"error": "upstream timeout"}, status=503)
        known = COMPANIES[domain]
        return web.json_response({"domain": domain, "name": known["name"], "employees": known["employees"]})

    async def people(self, request: web.Request) -> web.Response:
        self.calls.append(request.path)
        return web.json_response({"people": COMPANIES[request.match_info["domain"]]["people"]})


if __name__ == "__main__":
    run_forever(EnrichmentApi().app(), 8704)
