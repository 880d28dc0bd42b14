"""Applies a plan's faults one after another, and keeps a log of when each began and ended.

Under the hosted profile it also watches Realtime's message quota: a breach is injected in a
moment, but the quota stays over (and every change is dropped) until the next ticks say so, so
`quota_spans` records when the limit was in force, as the stack's counter reports it.
"""

from __future__ import annotations

import time

import anyio
from anyio.abc import TaskGroup

from tests.chaos.fleet import Fleet
from tests.chaos.gateway import Gateway
from tests.chaos.plan import (
    FREEZE_SECONDS,
    QUOTA_BREACH_FACTOR,
    QUOTA_BREACH_SECONDS,
    REST_503_SECONDS,
    SILENCE_SECONDS,
    Fault,
)
from tests.chaos.verdict import FaultEvent


class Injector:
    def __init__(self, gateway: Gateway, fleet: Fleet) -> None:
        self._gateway = gateway
        self._fleet = fleet
        self.log: list[FaultEvent] = []
        self.quota_spans: list[FaultEvent] = []  # while the message quota's limit was triggered
        self._opened: tuple[float, int] | None = None  # a span's start, and the drops before it
        self._watch_ended = False

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
        if fault.kind == "quota_breach":
            if stack.profile.messages_per_second is None:
                raise ValueError("a quota breach needs a profile with a message quota")
            rate = QUOTA_BREACH_FACTOR * stack.profile.messages_per_second
            # The app's own traffic of both kinds: postgres changes, and broadcasts, which the
            # workers' announcements are.
            stack.faults.count_messages(rate, QUOTA_BREACH_SECONDS, broadcasts=True)
            return f"{rate} messages/s for {QUOTA_BREACH_SECONDS:.0f} s", QUOTA_BREACH_SECONDS
        if fault.kind == "restart_gateway":
            await self._gateway.restart()
            stopped, started = self._gateway.stop_seconds[-1], self._gateway.start_seconds[-1]
            return f"port {stack.port}, stopped in {stopped:.1f} s, started in {started:.1f} s", 0.0
        raise ValueError(f"unknown fault kind {fault.kind}")

    async def watch_quota(self) -> None:
        """Record each span of the message quota's limit in force, until `end_watch`."""
        while not self._watch_ended:
            stack = self._gateway.stack
            rate = stack.realtime.message_rate if stack is not None else None
            if rate is not None:
                if rate.triggered and self._opened is None:
                    self._opened = (time.time(), self.dropped())
                elif not rate.triggered and self._opened is not None:
                    self._close_span()
            await anyio.sleep(0.2)

    def end_watch(self) -> None:
        """Stop watching; a span still open is recorded as lasting until now."""
        self._watch_ended = True
        if self._opened is not None:
            self._close_span(" (still in force at the end)")

    def dropped(self) -> int:
        """Changes the quota dropped, over every start of the gateway."""
        return sum(stack.realtime.counters.dropped for stack in self._gateway.served)

    def _close_span(self, note: str = "") -> None:
        assert self._opened is not None
        (started, before), self._opened = self._opened, None
        self.quota_spans.append(
            FaultEvent("quota_over", started, time.time(), f"{self.dropped() - before} changes dropped{note}")
        )
