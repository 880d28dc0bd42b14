"""Four `reactor run` processes, one per slot: killed without warning and started again, or
frozen for a while.

Each start gets a fresh worker id (w2.1, w2.2, …), so the audit can tell a killed worker's runs
from its successor's. Every process ever started is kept, with its output, for the logs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from tests.support.worker import REACTOR_COMMAND, WorkerProcess


class Fleet:
    def __init__(self, group: TaskGroup, env: Callable[[str], dict[str, str]], app: str, size: int) -> None:
        self._group = group
        self._env = env
        self._app = app
        self.current: list[tuple[str, WorkerProcess]] = []
        self.started: list[tuple[str, WorkerProcess]] = []
        self.killed: set[str] = set()
        self.frozen: set[str] = set()
        self._generations = [0] * size

    async def start_all(self) -> None:
        for slot in range(len(self._generations)):
            self.current.append(await self._start(slot))

    async def kill(self, slot: int) -> str:
        worker_id, worker = self.current[slot]
        worker.signal(signal.SIGKILL)
        await worker.wait()
        self.killed.add(worker_id)
        self.current[slot] = await self._start(slot)
        return worker_id

    async def freeze(self, slot: int, seconds: float) -> None:
        """Stop the slot's worker dead for `seconds`, then let it run on (unless killed meanwhile)."""
        worker_id, worker = self.current[slot]
        worker.signal(signal.SIGSTOP)
        self.frozen.add(worker_id)
        await anyio.sleep(seconds)
        if worker.process.returncode is None:
            worker.signal(signal.SIGCONT)

    async def stop(self) -> dict[str, int]:
        """SIGTERM every running worker; the exit code of each."""
        for _, worker in self.current:
            worker.signal(signal.SIGTERM)
        return {worker_id: await worker.wait(timeout=60) for worker_id, worker in self.current}

    async def aclose(self) -> None:
        for _, worker in self.started:
            if worker.process.returncode is None:
                worker.process.kill()
            await worker.process.aclose()

    async def _start(self, slot: int) -> tuple[str, WorkerProcess]:
        self._generations[slot] += 1
        worker_id = f"w{slot}.{self._generations[slot]}"
        process = await anyio.open_process([*REACTOR_COMMAND, self._app], env=self._env(worker_id))
        worker = WorkerProcess(process)
        self._group.start_soon(worker.collect)
        self.started.append((worker_id, worker))
        return worker_id, worker
