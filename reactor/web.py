"""Serving an aiohttp application inside the caller's anyio task: the worker's /healthz, /readyz and
/metrics (health.py) and the operator dashboard (reactor/dashboard/) share this one HTTP stack.

aiohttp is the stack because it runs as a guest in an event loop someone else owns: `AppRunner`
and `SockSite` start a server on the running loop and stop it on request, without taking over
signals, the loop or logging, which the worker keeps for its graceful shutdown. It is maintained,
serves streaming responses (the dashboard's server-sent events) and is already what the local
stack is built on, so the project carries one web stack, not two.
"""

from __future__ import annotations

import socket

import anyio
from aiohttp import web

# How long open requests (a dashboard's event streams) may take to finish once the server stops.
SHUTDOWN_SECONDS = 1.0


def listen(host: str | None, port: int) -> socket.socket:
    """A listening TCP socket: on `host`, or with None on every interface, IPv6 and IPv4 together
    where the system allows it, so that port 0 picks one free port for both."""
    if host is not None:
        return socket.create_server((host, port), family=_family(host), reuse_port=False)
    if socket.has_dualstack_ipv6():
        return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    return socket.create_server(("", port))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def serve(
    app: web.Application,
    sock: socket.socket,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `sock` until cancelled; `task_status` gets the port."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        task_status.started(sock.getsockname()[1])
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_SECONDS + 2):
            await runner.cleanup()
