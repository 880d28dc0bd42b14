"""The worker's HTTP endpoint for orchestrators and Prometheus: /healthz, /readyz, /metrics.

Served with aiohttp through reactor/web.py, the stack the operator dashboard uses too: three GET
routes (HEAD answered as well), 404 for any other path and 405 for another method on these.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
from aiohttp import web
from loguru import logger

from reactor import web as web_stack

# The classic text format, which every Prometheus version reads; prometheus_client writes it.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Health:
    def __init__(self, ready: Callable[[], dict[str, Any]], metrics: Callable[[], str]) -> None:
        self._ready = ready  # {"ready": bool, ...details}
        self._metrics = metrics
        self.port: int | None = None

    async def serve(
        self, port: int, task_status: anyio.abc.TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            sock = web_stack.listen(None, port)
        except OSError as exc:
            logger.error(f"health endpoint not started: port {port}: {exc} (set REACTOR_HEALTH_PORT)")
            task_status.started(None)
            return
        self.port = sock.getsockname()[1]
        logger.info(f"health endpoint on port {self.port}: /healthz /readyz /metrics")
        task_status.started(self.port)
        await web_stack.serve(self.app(), sock)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}\n', content_type="application/json")

    async def _readyz(self, request: web.Request) -> web.Response:
        state = self._ready()
        return web.Response(
            body=json.dumps(state).encode() + b"\n",
            status=200 if state["ready"] else 503,
            content_type="application/json",
        )

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})
