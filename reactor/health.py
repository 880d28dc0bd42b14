"""The worker's HTTP endpoint for orchestrators and Prometheus: /healthz, /readyz, /metrics.

A tiny HTTP/1.1 server on anyio's TCP listener: three GET routes with no bodies to parse do not
justify a web framework in a worker's dependencies. Every response closes its connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import SocketStream
from loguru import logger

_MAX_REQUEST = 8192
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
            listener = await anyio.create_tcp_listener(local_port=port)
        except OSError as exc:
            logger.error(f"health endpoint not started: port {port}: {exc} (set REACTOR_HEALTH_PORT)")
            task_status.started(None)
            return
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        logger.info(f"health endpoint on port {self.port}: /healthz /readyz /metrics")
        task_status.started(self.port)
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(5):
                    request = await _read_head(stream)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            status, content_type, body = self._respond(request)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            try:
                await stream.send(head.encode() + body)
            except (anyio.BrokenResourceError, OSError):
                return

    def _respond(self, request: bytes) -> tuple[str, str, bytes]:
        parts = request.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        path = parts[1].split(b"?", 1)[0]
        if path == b"/healthz":
            return "200 OK", "application/json", b'{"status":"ok"}\n'
        if path == b"/readyz":
            state = self._ready()
            status = "200 OK" if state["ready"] else "503 Service Unavailable"
            return status, "application/json", json.dumps(state).encode() + b"\n"
        if path == b"/metrics":
            return "200 OK", METRICS_CONTENT_TYPE, self._metrics().encode()
        return "404 Not Found", "text/plain", b"not found\n"


async def _read_head(stream: SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < _MAX_REQUEST:
        data += await stream.receive()
    return data
