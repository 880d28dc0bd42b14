"""Applies a plan's faults one after another, and keeps a log of when each began and ended."""

from __future__ import annotations

import time

import anyio
from anyio.abc import TaskGroup

from tests.chaos.fleet import Fleet
from tests.chaos.gateway import Gateway
from tests.chaos.plan import FREEZE_SECONDS, REST_503_SECONDS, SILENCE_SECONDS, Fault
from tests.chaos.verdict import FaultEvent


class Injector:
    def __init__(self, gateway: Gateway, fleet: Fleet) -> None:
        self._gateway = gateway
        self._fleet = fleet
        self.log: list[FaultEvent] = []

    async def run(self, faults: list[Fault]) -> None:
        """Returns when the last fault is over, a frozen worker thawed included."""
        async with anyio.create_task_group() as lasting:
            for fault in faults:
                await anyio.sleep(fault.gap)
                started = time.time()
                detail, lasts = await self._apply(fault, lasting)
                self.log.append(FaultEvent(fault.kind, started, max(time.time(), started + lasts), detail))

    async def _apply(self, fault: Fault, lasting: TaskGroup) -> tuple[str, float]:
        """Inject one fault; what it hit, and how many seconds it lasts beyond the call."""
        stack = self._gateway.stack
        assert stack is not None
        if fault.kind == "kill_worker":
            return await self._fleet.kill(fault.worker), 0.0
        if fault.kind == "freeze_worker":
            lasting.start_soon(self._fleet.freeze, fault.worker, FREEZE_SECONDS)
            return self._fleet.current[fault.worker][0], FREEZE_SECONDS
        if fault.kind == "close_sockets":
            await stack.realtime.close_sockets(fault.close_code)
            return f"code {fault.close_code}", 0.0
        if fault.kind == "silence_feed":
            stack.faults.go_silent(SILENCE_SECONDS)
            return "", SILENCE_SECONDS
        if fault.kind == "rest_503":
            stack.faults.fail_rest(503, REST_503_SECONDS)
            return "", REST_503_SECONDS
        if fault.kind == "restart_gateway":
            await self._gateway.restart()
            return f"port {stack.port}", 0.0
        raise ValueError(f"unknown fault kind {fault.kind}")
