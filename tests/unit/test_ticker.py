"""The ticker on the in-memory store: what each tick asks for (statistics when due, the probe when
the feed wants one, the last probe's removal), and what it does with the answer (claimed rows,
reaped leases and statistics logged, the next due time, inserts withheld for the Realtime budget)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from loguru import logger

from reactor import ticker as ticker_module
from reactor.feed import Feed
from reactor.memory import MemoryStore
from reactor.store import Unavailable
from reactor.ticker import Ticker

pytestmark = pytest.mark.anyio


class Clock:
    """The ticker's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ticker_module, "time", clock)
    return clock


class Ticks(MemoryStore):
    """The memory store, recording what each tick asked for; it answers a probe with a row id, and
    reports `withheld` inserts as the database does for the Realtime budget."""

    def __init__(self) -> None:
        super().__init__(("jobs", "other"))
        self.asked: list[dict[str, Any]] = []
        self.withheld: int | None = None
        self.deleted: list[tuple[str, int]] = []
        self.delete_fails = False
        self._probe_ids = iter(range(500, 600))

    async def tick(
        self, table: str, worker: str, job_types: Any, limit: int, lease_seconds: int, **kw: Any
    ) -> dict[str, Any]:
        self.asked.append(
            {"table": table, "worker": worker, "limit": limit, "lease_seconds": lease_seconds, **kw}
        )
        answer = await super().tick(table, worker, job_types, limit, lease_seconds, **kw)
        return {**answer, "probe": next(self._probe_ids) if kw["probe"] else None, "withheld": self.withheld}

    async def delete_probe(self, table: str, probe_id: int) -> None:
        if self.delete_fails:
            raise Unavailable("delete: cannot reach the API: ConnectError")
        self.deleted.append((table, probe_id))


class Due:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __call__(self, table: str, seconds: float) -> None:
        self.calls.append((table, seconds))


def make(
    store: MemoryStore, feed: Feed | None = None, events: Counter[str] | None = None, due: Due | None = None
) -> Ticker:
    return Ticker(store, "w1", 30, 60.0, due or Due(), feed, Counter() if events is None else events)


@asynccontextmanager
async def logged(level: str = "INFO") -> AsyncIterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    handle = logger.add(
        lambda m: lines.append(
            {"level": m.record["level"].name, "message": m.record["message"], **m.record["extra"]}
        ),
        level=level,
    )
    try:
        yield lines
    finally:
        logger.remove(handle)


async def test_a_tick_claims_for_this_worker_under_its_lease() -> None:
    store = Ticks()
    ids = [await store.enqueue("jobs", {"job_type": "echo"}) for _ in range(3)]
    await store.enqueue("jobs", {"job_type": "not-mine"})
    claimed = await make(store).tick("jobs", ["echo"], 2, standby_seconds=7)
    assert [row["id"] for row in claimed] == ids[:2]
    asked = store.asked[0]
    assert (asked["worker"], asked["limit"], asked["lease_seconds"], asked["standby_seconds"]) == (
        "w1",
        2,
        30,
        7,
    )
    for job_id in ids[:2]:
        row = store.row("jobs", job_id)
        assert (row["status"], row["locked_by"]) == ("processing", "w1")
        assert row["lease_expires_at"] > datetime.now(UTC) + timedelta(seconds=29)


async def test_statistics_come_with_the_first_tick_and_again_after_three_quarters_of_their_interval(
    clock: Clock,
) -> None:
    store = Ticks()
    ticker = make(store)  # statistics every 60 s
    async with logged() as lines:
        await ticker.tick("jobs", ["echo"], 1)
        clock.now += 44.0
        await ticker.tick("jobs", ["echo"], 1)  # too early
        await ticker.tick("other", ["echo"], 1)  # another table keeps its own time
        clock.now += 1.5  # 45.5 s after the last: within the slack, so this tick carries them
        await ticker.tick("jobs", ["echo"], 1)
        clock.now += 44.0
        await ticker.tick("jobs", ["echo"], 1)
    assert [(a["table"], a["stats"]) for a in store.asked] == [
        ("jobs", True),
        ("jobs", False),
        ("other", True),
        ("jobs", True),
        ("jobs", False),
    ]
    stats = [line for line in lines if line["message"] == "queue statistics"]
    assert [(line["level"], line["table"]) for line in stats] == [
        ("INFO", "jobs"),
        ("INFO", "other"),
        ("INFO", "jobs"),
    ]
    assert stats[0]["counts"]["pending"] == 0 and "counts" in stats[1]


async def test_reaped_leases_are_logged_with_their_table() -> None:
    store = Ticks()
    spent = await store.enqueue("jobs", {"job_type": "echo", "max_attempts": 1})
    again = await store.enqueue("jobs", {"job_type": "echo"})
    await store.claim("jobs", "gone", ["echo"], 2, 60)
    for job_id in (spent, again):
        store.tables["jobs"][job_id].lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    ticker = make(store)
    async with logged("WARNING") as lines:
        await ticker.tick("jobs", ["echo"], 0)
        await ticker.tick("jobs", ["echo"], 0)  # nothing reaped: nothing logged
    assert [(line["table"], line["message"]) for line in lines] == [
        ("jobs", f"reaped expired leases in jobs: requeued [{again}], failed for good [{spent}]")
    ]


async def test_a_requeued_lease_alone_is_logged_too() -> None:
    store = Ticks()
    again = await store.enqueue("jobs", {"job_type": "echo"})
    await store.claim("jobs", "gone", ["echo"], 1, 60)
    store.tables["jobs"][again].lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    async with logged("WARNING") as lines:
        await make(store).tick("jobs", ["echo"], 0)
    assert [line["message"] for line in lines] == [
        f"reaped expired leases in jobs: requeued [{again}], failed for good []"
    ]


async def test_the_next_due_time_is_passed_on_for_a_timer() -> None:
    store, due = Ticks(), Due()
    await store.enqueue("jobs", {"job_type": "echo", "run_at": datetime.now(UTC) + timedelta(seconds=90)})
    ticker = make(store, due=due)
    await ticker.tick("other", ["echo"], 1)  # nothing scheduled there
    await ticker.tick("jobs", ["echo"], 1)
    assert [table for table, _ in due.calls] == ["jobs"]
    assert 85 < due.calls[0][1] <= 90 and isinstance(due.calls[0][1], float)


async def test_a_wanted_probe_rides_the_next_tick_of_its_table_and_is_removed_by_the_one_after() -> None:
    store, feed = Ticks(), Feed(True)
    ticker = make(store, feed)
    sent = feed.want_probe("jobs")
    await ticker.tick("other", ["echo"], 1)  # not the probe's table
    assert not sent.is_set()
    await ticker.tick("jobs", ["echo"], 1)
    assert sent.is_set() and not feed.probe_wanted("jobs")
    await ticker.tick("jobs", ["echo"], 1)
    assert [(a["table"], a["probe"], a["old_probe"]) for a in store.asked] == [
        ("other", False, None),
        ("jobs", True, None),
        ("jobs", False, 500),  # the probe row, deleted by this tick
    ]


async def test_without_realtime_no_probe_is_asked_for() -> None:
    store = Ticks()
    store.withheld = 3
    await make(store, None).tick("jobs", ["echo"], 1)
    assert store.asked[0]["probe"] is False


async def test_the_probe_rows_left_at_shutdown_are_deleted() -> None:
    store, feed = Ticks(), Feed(True)
    ticker = make(store, feed)
    for table in ("jobs", "other"):
        feed.want_probe(table)
        await ticker.tick(table, ["echo"], 1)
    await ticker.remove_probes()
    assert store.deleted == [("jobs", 500), ("other", 501)]
    await ticker.remove_probes()
    assert len(store.deleted) == 2  # each once


async def test_a_probe_row_the_api_will_not_delete_is_logged_and_forgotten() -> None:
    store, feed = Ticks(), Feed(True)
    ticker = make(store, feed)
    feed.want_probe("jobs")
    await ticker.tick("jobs", ["echo"], 1)
    store.delete_fails = True
    async with logged("WARNING") as lines:
        await ticker.remove_probes()
    assert [line["message"] for line in lines] == [
        "Realtime probe row 500 in jobs not removed: delete: cannot reach the API: ConnectError"
    ]
    store.delete_fails = False
    await ticker.remove_probes()
    assert store.deleted == []


async def test_a_hung_api_does_not_hold_up_the_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ticker_module, "_REMOVE_PROBES_SECONDS", 0.2)
    store, feed = Ticks(), Feed(True)
    ticker = make(store, feed)
    feed.want_probe("jobs")
    await ticker.tick("jobs", ["echo"], 1)

    async def hang(table: str, probe_id: int) -> None:
        await anyio.sleep(60)

    store.delete_probe = hang  # type: ignore[method-assign]
    with anyio.fail_after(10):
        await ticker.remove_probes()


async def test_inserts_withheld_for_the_budget_are_counted_and_warned_of_once_a_spell() -> None:
    store, feed, events = Ticks(), Feed(True), Counter[str]()
    ticker = make(store, feed, events)
    async with logged("WARNING") as lines:
        for total in (5, 5, 8, 10):  # the first report is the starting count
            store.withheld = total
            await ticker.tick("jobs", ["echo"], 1)
            if total == 5:
                assert not feed.budget_reached()
        store.withheld = None  # a database without the budget's count
        await ticker.tick("jobs", ["echo"], 1)
    assert events["realtime_withheld"] == 5
    assert feed.budget_reached()
    assert [line["message"] for line in lines] == [
        "Realtime budget reached: 3 insert(s) since the last tick were not announced"
        " (reactor.realtime_budget); ticking fast to claim them until the budget frees"
    ]
