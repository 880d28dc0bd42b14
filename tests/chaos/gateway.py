"""The local stack's gateway on one fixed port, restartable the way a crashed gateway comes back.

A restart closes every socket and HTTP connection, frees the port and serves again on it with the
same keys, so workers keep their configuration and must find their own way back. Faults still
running (a silent feed, a REST outage) carry over: they stand for the network, not the process.
"""

from __future__ import annotations

from dataclasses import fields

import anyio
from anyio.abc import TaskStatus

from reactor.devstack.faults import Faults
from reactor.devstack.keys import Keys
from reactor.devstack.stack import Stack, serve


class Gateway:
    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._keys = Keys.generate()
        self._stopping = False
        self._restart = anyio.Event()
        self._up = anyio.Event()
        self.stack: Stack | None = None
        self.restarts = 0

    async def run(self, *, task_status: TaskStatus[Stack] = anyio.TASK_STATUS_IGNORED) -> None:
        port = 0  # the first start picks a free port; every restart takes the same one again
        while not self._stopping:
            async with serve(self._database_url, port=port, keys=self._keys) as stack:
                if self.stack is not None:
                    _carry(self.stack.faults, stack.faults)
                else:
                    task_status.started(stack)
                port, self.stack = stack.port, stack
                self._up.set()
                await self._restart.wait()

    async def restart(self) -> None:
        self.restarts += 1
        requested, self._restart = self._restart, anyio.Event()
        self._up = anyio.Event()
        requested.set()
        await self._up.wait()

    def stop(self) -> None:
        self._stopping = True
        self._restart.set()


def _carry(old: Faults, new: Faults) -> None:
    for f in fields(Faults):
        setattr(new, f.name, getattr(old, f.name))
