"""The poller: ticks on the slow schedule while Realtime is dependable and the fast one while not,
a tick at once when asked, and timers that fire at the time asked, not on the next tick. Times are
measured against the time asked, with margins that tell "on the timer" from "on the next tick"
(a minute away in these tests)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import anyio
import pytest

from reactor.poller import Poller

pytestmark = pytest.mark.anyio

LATE = 0.4  # a timer this late is not on its time (but far from the next tick, a minute away)


class Calls:
    def __init__(self) -> None:
        self.healthy = True
        self.ticks: list[float] = []
        self.wakes: list[tuple[str | None, datetime, float]] = []
        self.events: Counter[str] = Counter()

    def wake(self, table: str | None) -> None:
        self.wakes.append((table, datetime.now(UTC), time.monotonic()))

    def tick(self) -> None:
        self.ticks.append(time.monotonic())


def make(calls: Calls, fast: float = 60.0, slow: float = 60.0) -> Poller:
    return Poller(calls.wake, calls.tick, fast, slow, lambda: calls.healthy, calls.events)


@asynccontextmanager
async def polling(poller: Poller) -> AsyncIterator[Poller]:
    with anyio.fail_after(30):  # a safety net against a hung test, not a timing assertion
        async with anyio.create_task_group() as group:
            group.start_soon(poller.run)
            yield poller
            group.cancel_scope.cancel()


async def until(check: object, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not check():  # type: ignore[operator]
            await anyio.sleep(0.005)


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in pairwise(times)]


async def test_ticks_come_on_the_slow_schedule_while_realtime_is_dependable() -> None:
    calls = Calls()
    poller = make(calls, fast=0.05, slow=0.3)
    assert poller.interval() == 0.3
    async with polling(poller):
        started = time.monotonic()
        await until(lambda: len(calls.ticks) == 3)
    assert calls.ticks[0] - started < LATE  # the first at once
    assert all(0.3 <= gap < 0.3 + LATE for gap in gaps(calls.ticks))
    assert calls.events["ticks"] == 3 and calls.wakes == []


async def test_ticks_come_on_the_fast_schedule_while_it_is_not() -> None:
    calls = Calls()
    calls.healthy = False
    poller = make(calls, fast=0.1, slow=60)
    assert poller.interval() == 0.1
    async with polling(poller):
        await until(lambda: len(calls.ticks) == 4)
    assert all(0.1 <= gap < 0.1 + LATE for gap in gaps(calls.ticks))
    assert calls.events["ticks"] == 4


async def test_when_realtime_goes_down_the_next_tick_comes_on_the_fast_schedule() -> None:
    calls = Calls()
    poller = make(calls, fast=0.2, slow=60)
    async with polling(poller):
        await until(lambda: len(calls.ticks) == 1)
        calls.healthy = False
        went_down = time.monotonic()
        poller.health_changed()
        await until(lambda: len(calls.ticks) == 3)
    assert 0.2 <= calls.ticks[1] - went_down < 0.2 + LATE  # not a minute later
    assert 0.2 <= calls.ticks[2] - calls.ticks[1] < 0.2 + LATE


async def test_a_feed_found_undependable_between_ticks_shortens_the_wait_at_the_next_look() -> None:
    calls = Calls()
    poller = make(calls, fast=0.2, slow=60)
    async with polling(poller):
        await until(lambda: len(calls.ticks) == 1)
        calls.healthy = False  # no health_changed: the budget, say, found at the next wake-up
        poller.schedule("jobs", datetime.now(UTC))  # something else wakes the loop
        looked = time.monotonic()
        await until(lambda: len(calls.ticks) == 2)
    assert 0.2 <= calls.ticks[1] - looked < 0.2 + LATE


async def test_tick_now_ticks_at_once() -> None:
    calls = Calls()
    poller = make(calls)
    async with polling(poller):
        await until(lambda: len(calls.ticks) == 1)
        asked = time.monotonic()
        poller.tick_now()
        await until(lambda: len(calls.ticks) == 2)
        assert calls.ticks[1] - asked < LATE
        await anyio.sleep(0.1)
    assert len(calls.ticks) == 2  # once, not on every look after
    assert calls.wakes == []


async def test_a_timer_wakes_a_claim_of_its_table_at_the_time_asked() -> None:
    calls = Calls()
    poller = make(calls)
    async with polling(poller):
        await until(lambda: len(calls.ticks) == 1)
        later, sooner = (
            datetime.now(UTC) + timedelta(seconds=0.5),
            datetime.now(UTC) + timedelta(seconds=0.25),
        )
        poller.schedule("jobs", later)
        poller.schedule("other", sooner)
        await until(lambda: len(calls.wakes) == 2)
    assert [table for table, _, _ in calls.wakes] == ["other", "jobs"]
    for (_, woke, _), at in zip(calls.wakes, [sooner, later], strict=True):
        assert at <= woke < at + timedelta(seconds=LATE)
    assert len(calls.ticks) == 1  # a timer claims; it is not a tick


async def test_a_timer_for_a_time_gone_by_wakes_a_claim_at_once() -> None:
    calls = Calls()
    poller = make(calls)
    async with polling(poller):
        await until(lambda: len(calls.ticks) == 1)
        asked = time.monotonic()
        poller.schedule("jobs", datetime.now(UTC) - timedelta(minutes=5))
        await until(lambda: calls.wakes)
    assert calls.wakes[0][0] == "jobs" and calls.wakes[0][2] - asked < LATE


async def test_a_due_time_a_tick_reports_gets_a_tick_of_its_own_then() -> None:
    calls = Calls()
    poller = make(calls)
    async with polling(poller):
        await until(lambda: len(calls.ticks) == 1)
        asked = time.monotonic()
        poller.due_in("jobs", 0.3)
        await until(lambda: len(calls.ticks) == 2)
    assert 0.3 <= calls.ticks[1] - asked < 0.3 + LATE
    assert calls.wakes == []  # a tick, which also reports the next due time, not a claim


async def test_each_tick_reports_the_due_time_afresh_so_the_latest_replaces_the_earlier() -> None:
    calls = Calls()
    poller = make(calls)
    async with polling(poller):
        await until(lambda: len(calls.ticks) == 1)
        asked = time.monotonic()
        poller.due_in("jobs", 0.6)
        poller.due_in("jobs", 0.2)
        poller.due_in("other", -5)  # overdue: at once
        await until(lambda: len(calls.ticks) == 2)
        assert calls.ticks[1] - asked < LATE / 2
        await until(lambda: len(calls.ticks) == 3)
        assert 0.2 <= calls.ticks[2] - asked < 0.2 + LATE
        await anyio.sleep(0.8)  # past the replaced 0.6 s
    assert len(calls.ticks) == 3
