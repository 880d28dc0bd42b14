"""The local stack's gateway on one fixed port, restartable the way a crashed gateway comes back.

A restart closes every socket and HTTP connection, frees the port and serves again on it with the
same keys, so workers keep their configuration and must find their own way back. Faults still
running (a silent feed, a REST outage) carry over: they stand for the network, not the process.
So do Realtime's quota counters under the hosted profile: the quota is the project's, and a
breach in progress stays in force across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from dataclasses import fields

import anyio
from anyio.abc import TaskStatus

from reactor.devstack.faults import Faults
from reactor.devstack.keys import Keys
from reactor.devstack.profile import Profile
from reactor.devstack.stack import Stack, serve

_RATE_COUNTERS = ("message_rate", "join_rate", "event_rate")  # Realtime's, None unless hosted
SLOW_STOP_SECONDS = 5.0


class Gateway:
    def __init__(self, database_url: str, profile: Profile | None = None) -> None:
        self._database_url = database_url
        self._keys = Keys.generate()
        self._profile = profile
        self._stopping = False
        self._restart = anyio.Event()
        self._up = anyio.Event()
        self.stack: Stack | None = None
        self.served: list[Stack] = []  # every start's stack, for the counters of each
        self.restarts = 0
        self.start_seconds: list[float] = []  # each start's, and each stop's, time
        self.stop_seconds: list[float] = []
        self.slow_stops: list[str] = []  # what each stop over SLOW_STOP_SECONDS waited for

    async def run(self, *, task_status: TaskStatus[Stack] = anyio.TASK_STATUS_IGNORED) -> None:
        port = 0  # the first start picks a free port; every restart takes the same one again
        while not self._stopping:
            began = time.monotonic()
            async with anyio.create_task_group() as watch:
                async with serve(
                    self._database_url, port=port, keys=self._keys, profile=self._profile
                ) as stack:
                    self.start_seconds.append(time.monotonic() - began)
                    if self.stack is not None:
                        _carry(self.stack.faults, stack.faults)
                        _carry_quotas(self.stack, stack)
                    else:
                        task_status.started(stack)
                    self.served.append(stack)
                    port, self.stack = stack.port, stack
                    self._up.set()
                    await self._restart.wait()
                    stopping = time.monotonic()
                    watch.start_soon(self._dump_if_slow, stack)
                self.stop_seconds.append(time.monotonic() - stopping)
                watch.cancel_scope.cancel()

    async def _dump_if_slow(self, stack: Stack) -> None:
        """If a stop takes over SLOW_STOP_SECONDS, keep what it waits for (docs/reliability.md:
        some restarts take 30 to 50 s): every task's chain of awaits, the stack's Realtime sockets
        still open, and which processes hold connections to its port."""
        await anyio.sleep(SLOW_STOP_SECONDS)
        dump = io.StringIO()
        dump.write(f"restart {self.restarts}, {SLOW_STOP_SECONDS:.0f} s into its stop\n")
        for task in asyncio.all_tasks():
            dump.write(f"--- {task.get_name()}\n")
            dump.writelines(f"  {line}\n" for line in _awaits(task.get_coro()))
        dump.write("--- Realtime sockets still open (peer, websocket closed)\n")
        for socket in list(getattr(stack.realtime, "_sockets", ())):  # diagnostics only
            transport = socket.request.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            dump.write(f"  {peer} {socket.ws.closed}\n")
        with contextlib.suppress(OSError):
            ss = await anyio.run_process(
                ["ss", "-tnp", f"( sport = :{stack.port} or dport = :{stack.port} )"], check=False
            )
            dump.write(f"--- ss\n{ss.stdout.decode(errors='replace')}")
        self.slow_stops.append(dump.getvalue())

    async def restart(self) -> None:
        self.restarts += 1
        requested, self._restart = self._restart, anyio.Event()
        self._up = anyio.Event()
        requested.set()
        await self._up.wait()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        self._stopping = True
        self._restart.set()


def _carry(old: Faults, new: Faults) -> None:
    for f in fields(Faults):
        setattr(new, f.name, getattr(old, f.name))


def _carry_quotas(old: Stack, new: Stack) -> None:
    for name in _RATE_COUNTERS:
        before, after = getattr(old.realtime, name), getattr(new.realtime, name)
        if before is not None and after is not None:
            after.buckets.clear()
            after.buckets.extend(before.buckets)
            after.count, after.avg, after.triggered = before.count, before.avg, before.triggered


def _awaits(coro: object) -> list[str]:
    """Where a task's coroutine is, and each coroutine it awaits in turn."""
    lines = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines
