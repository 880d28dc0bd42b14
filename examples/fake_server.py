"""Run an example's stand-in for an outside service on localhost, so nothing reaches the internet:
`python -m examples.vehicle_quotes.fake_api` (each example's fake_api.py uses this)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from aiohttp import web


@asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (`port` 0 picks a free one) and yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def run_forever(app: web.Application, port: int) -> None:
    async def main() -> None:
        async with serving(app, port) as url:
            print(f"fake service on {url}; Ctrl-C stops it", flush=True)
            await asyncio.Event().wait()

    with suppress(KeyboardInterrupt):
        asyncio.run(main())
