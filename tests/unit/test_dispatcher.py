"""The dispatcher's hand-offs, on the in-memory store with the worker's own parts and a feed the
test sets live (what the listener does): which hand-offs start, which go back, and how each counts
against the slots the worker offered."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from loguru import logger

from reactor import Job, Reactor
from reactor.dispatcher import Dispatcher
from reactor.executor import Outcome
from reactor.feed import Feed
from reactor.lease_keeper import LeaseKeeper
from reactor.memory import MemoryStore
from reactor.metrics import Metrics
from reactor.redact import Redactor
from reactor.reporter import Reporter
from reactor.retry import RetryPolicy
from reactor.runner import JobRunner
from reactor.running import RunningJobs
from reactor.standby import Standby
from reactor.store import Unavailable
from reactor.ticker import Ticker
from reactor.wakeups import Wakeups
from tests.support.memory_worker import serving

pytestmark = pytest.mark.anyio


class Parts:
    """A worker's claim loop and what it needs, wired as reactor/worker.py wires them."""

    def __init__(self, app: Reactor, store: MemoryStore, concurrency: int = 4) -> None:
        self.store = store
        self.feed = Feed(True)
        self.feed.state = "subscribed"
        self.feed.went_live("jobs")
        self.wakeups = Wakeups(["jobs"])
        self.standby = Standby(store, "w1", 30, self.feed)
        self.running = RunningJobs()
        self.reporter = Reporter(store, 5.0, Redactor([]), wake=self.wakeups.wake)
        self.keeper = LeaseKeeper(store, self.running, self.reporter.leases, 30)
        metrics = Metrics()
        runner = JobRunner(
            "w1",
            store,
            self.reporter,
            self.running,
            RetryPolicy(0.01, 0.01),
            Redactor([]),
            metrics,
            lambda table, at: None,
            self.wakeups,
            self.standby,
        )
        ticker = Ticker(store, "w1", 30, 60.0, lambda table, seconds: None, self.feed, metrics.events)
        self.dispatcher = Dispatcher(
            "w1",
            concurrency,
            30,
            store,
            app.registry("jobs"),
            ticker,
            self.wakeups,
            self.standby,
            runner,
            self.running,
            self.keeper.confirm,
        )

    async def hand_off(self, job_type: str = "echo", **job: Any) -> tuple[int, dict[str, Any]]:
        """Insert a job the database hands to this worker; its id and its Realtime record."""
        job_id = await self.store.enqueue("jobs", {"job_type": job_type, "payload": {"n": 1}, **job})
        self.store.tables["jobs"][job_id].job_type = job_type
        await self.store.claim("jobs", "w1", [job_type], 1, 5)  # what the insert trigger does
        row = self.store.row("jobs", job_id)
        return job_id, {
            **row,
            "run_at": row["run_at"].isoformat(),
            "created_at": row["created_at"].isoformat(),
        }


@asynccontextmanager
async def working(parts: Parts) -> AsyncIterator[Parts]:
    """Run the claim loop; on leaving, stop claiming, let the jobs finish, hand back what shutdown
    left, and record the outcomes, as the worker does."""
    with anyio.fail_after(30):  # a safety net against a hung test, not a timing assertion
        async with anyio.create_task_group() as outer:
            outer.start_soon(parts.reporter.run)
            outer.start_soon(parts.keeper.run)
            async with anyio.create_task_group() as jobs:
                jobs.start_soon(parts.dispatcher.run, jobs)
                parts.wakeups.wake("jobs")  # the first claim makes the offer
                await until(lambda: parts.store.calls[("reactor_claim_jobs", "ok")] >= 1)
                yield parts
                parts.dispatcher.stop_claiming()
            for table, leases in parts.running.to_release.items():
                await parts.store.release(table, leases)
            parts.reporter.close()
            await parts.reporter.drained()
            outer.cancel_scope.cancel()


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.005)
    return value


def status(store: MemoryStore, job_id: int) -> str:
    return store.row("jobs", job_id)["status"]


def echo_app(gate: anyio.Event | None = None) -> tuple[Reactor, list[int]]:
    app, ran = Reactor(), []

    @app.handler("echo")
    async def echo(job: Job) -> object:
        ran.append(job.id)
        if gate is not None:
            await gate.wait()
        return job.payload

    return app, ran


async def test_each_hand_off_takes_one_of_the_slots_the_claim_offered() -> None:
    gate = anyio.Event()
    app, ran = echo_app(gate)
    store = MemoryStore()
    parts = Parts(app, store, concurrency=3)  # an empty claim offers all three slots
    async with working(parts):
        for expected_spent in (False, False, True):
            _, record = await parts.hand_off()
            parts.dispatcher.take("jobs", record)
            assert parts.standby.spent("jobs") is expected_spent
        await until(lambda: len(ran) == 3)
        gate.set()
    assert all(store.row("jobs", job_id)["status"] == "completed" for job_id in ran)


async def test_a_hand_off_with_a_slot_free_starts_at_once() -> None:
    gate = anyio.Event()
    app, ran = echo_app(gate)
    store = MemoryStore()
    parts = Parts(app, store, concurrency=2)
    async with working(parts):
        first, record = await parts.hand_off()
        parts.dispatcher.take("jobs", record)
        second, record = await parts.hand_off()
        parts.dispatcher.take("jobs", record)  # the last free slot
        await until(lambda: len(ran) == 2)
        assert ran == [first, second] and store.row("jobs", second)["attempts"] == 1
        assert store.calls[("reactor_release", "ok")] == 0  # started from its record, not handed back
        gate.set()
    assert status(store, second) == "completed"


async def test_the_same_hand_off_heard_twice_runs_once() -> None:
    gate = anyio.Event()
    app, ran = echo_app(gate)
    store = MemoryStore()
    parts = Parts(app, store, concurrency=2)  # offers two
    async with working(parts):
        job_id, record = await parts.hand_off()
        parts.dispatcher.take("jobs", record)
        parts.dispatcher.take("jobs", record)
        assert not parts.standby.spent("jobs")  # counted once
        gate.set()
        await until(lambda: status(store, job_id) == "completed")
    assert ran == [job_id]


async def test_an_unreadable_hand_off_fails_for_good_and_takes_its_slot() -> None:
    app, ran = echo_app()
    store = MemoryStore()
    parts = Parts(app, store, concurrency=1)  # offers one
    async with working(parts):
        job_id, record = await parts.hand_off(user_id="not-a-uuid")
        parts.dispatcher.take("jobs", record)
        assert parts.standby.spent("jobs")
        await until(lambda: status(store, job_id) == "failed")
    assert store.row("jobs", job_id)["last_error"] == "the job's row cannot be read: user_id is not a UUID"
    assert ran == []


async def test_a_hand_off_record_without_its_lease_is_left_to_the_reaper() -> None:
    app, ran = echo_app()
    store = MemoryStore()
    parts = Parts(app, store, concurrency=1)
    records: list[str] = []
    sink = logger.add(lambda m: records.append(m.record["message"]), level="ERROR")
    try:
        async with working(parts):
            job_id, record = await parts.hand_off()
            record = {k: v for k, v in record.items() if k != "lease_token"}
            parts.dispatcher.take("jobs", record)
            assert not parts.standby.spent("jobs")  # a lease it cannot name is not counted
    finally:
        logger.remove(sink)
    assert status(store, job_id) == "processing" and ran == []
    assert len(records) == 1 and records[0].endswith("; the reaper will hand it back")


@pytest.mark.parametrize("job_type", ["echo", "unknown"])
async def test_a_hand_off_that_cannot_start_now_is_handed_back_at_shutdown_with_its_attempt(
    job_type: str,
) -> None:
    """One arriving once the worker stops claiming, or of a type it has no handler for."""
    app, ran = echo_app()
    store = MemoryStore()
    parts = Parts(app, store)
    async with working(parts):
        if job_type == "echo":
            parts.dispatcher.stop_claiming()
        job_id, record = await parts.hand_off(job_type)
        parts.dispatcher.take("jobs", record)
        assert status(store, job_id) == "processing"  # held until shutdown, not run
    row = store.row("jobs", job_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert ran == []


class Unconfirmed(MemoryStore):
    """Heartbeats fail while `down`; outcome calls are timed."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.completed_at: float | None = None
        self.confirmed_at: float | None = None

    async def heartbeat(self, table: str, leases: list[dict[str, Any]], lease_seconds: int) -> dict[str, Any]:
        if self.down:
            raise Unavailable("reactor_heartbeat: cannot reach the API: ConnectError")
        answer = await super().heartbeat(table, leases, lease_seconds)
        if answer["extended"] and self.confirmed_at is None:
            self.confirmed_at = time.monotonic()
        return answer

    async def complete(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        self.completed_at = time.monotonic()
        return await super().complete(table, jobs)


async def test_a_hand_offs_outcome_waits_until_its_confirmation_is_settled() -> None:
    app, ran = echo_app()
    store = Unconfirmed()
    parts = Parts(app, store)
    async with working(parts):
        job_id, record = await parts.hand_off()
        parts.dispatcher.take("jobs", record)
        await until(lambda: ran)
        await anyio.sleep(0.2)  # the handler has long returned
        assert store.completed_at is None  # the database would refuse it before the confirmation
        store.down = False
        await until(lambda: status(store, job_id) == "completed")
    assert store.confirmed_at is not None and store.completed_at is not None
    assert store.confirmed_at <= store.completed_at


def test_outcome_items_carry_what_each_function_reads() -> None:
    from datetime import UTC, datetime

    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert Outcome("completed", result={"a": 1}).item() == {"result": {"a": 1}}
    assert Outcome("failed", error="no").item() == {"error": "no", "permanent": True}
    assert Outcome("retried", error="no", retry_at=at).item() == {"error": "no", "retry_at": at.isoformat()}
    assert Outcome("snoozed", error="wait", retry_at=at).item() == {
        "error": "wait",
        "retry_at": at.isoformat(),
    }


class Claims(MemoryStore):
    """The memory store, recording what each claim and tick asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, int, int]] = []  # (function, worker, limit, standby)
        self.heard: list[int | None] = []  # what each claim said the worker had heard of

    async def claim(
        self,
        table: str,
        worker: str,
        job_types: Any,
        limit: int,
        lease_seconds: int,
        standby_seconds: int = 0,
        heard: int | None = None,
    ) -> list[dict[str, Any]]:
        self.asked.append(("claim", worker, limit, standby_seconds))
        self.heard.append(heard)
        return await super().claim(table, worker, job_types, limit, lease_seconds, standby_seconds, heard)

    async def tick(
        self, table: str, worker: str, job_types: Any, limit: int, lease_seconds: int, **kw: Any
    ) -> dict[str, Any]:
        self.asked.append(("tick", worker, limit, kw["standby_seconds"]))
        return await super().tick(table, worker, job_types, limit, lease_seconds, **kw)


async def test_claims_and_ticks_offer_the_free_slots_while_the_feed_is_live() -> None:
    gate = anyio.Event()
    app, ran = echo_app(gate)
    store = Claims()
    parts = Parts(app, store, concurrency=3)
    assert parts.dispatcher.api_ok is False  # not ready before a claim has reached the API
    job_id = await store.enqueue("jobs", {"job_type": "echo"})
    async with working(parts):
        await until(lambda: ran == [job_id])
        assert parts.dispatcher.api_ok is True
        assert store.row("jobs", job_id)["locked_by"] == "w1"
        parts.wakeups.tick()
        await until(lambda: any(function == "tick" for function, *_ in store.asked))
        gate.set()
    assert store.asked[0] == ("claim", "w1", 3, 30)
    assert ("tick", "w1", 2, 30) in store.asked  # one slot busy: two offered


async def test_hand_offs_that_take_half_the_offer_renew_it_saying_how_many_were_heard() -> None:
    app, ran = echo_app()
    store = Claims()
    parts = Parts(app, store, concurrency=8)

    def claims() -> list[tuple[tuple[str, str, int, int], int | None]]:
        """The worker's claims (Parts.hand_off's stand-in for the insert trigger offers nothing)."""
        return [(asked, heard) for asked, heard in zip(store.asked, store.heard, strict=True) if asked[3]]

    async with working(parts):
        await until(lambda: len(claims()) == 2)  # the claim that made the offer, one more look
        for n in range(1, 4):
            _, record = await parts.hand_off()
            parts.dispatcher.take("jobs", record)
            await until(lambda n=n: len(ran) == n and not parts.running)
        assert len(claims()) == 2  # 5 of 8 still offered
        _, record = await parts.hand_off()
        parts.dispatcher.take("jobs", record)
        await until(lambda: len(claims()) == 3)
    (function, _, limit, standby), heard = claims()[2]
    assert (function, standby, heard) == ("claim", 30, 4) and limit >= 7  # the fourth job may still run


async def test_unreadable_rows_in_a_claimed_batch_fail_alone_and_the_rest_start_at_once() -> None:
    app, ran = echo_app()
    store = MemoryStore()
    parts = Parts(app, store, concurrency=4)
    first = await store.enqueue("jobs", {"job_type": "echo"})
    bad = await store.enqueue("jobs", {"job_type": "echo", "user_id": "not-a-uuid"})
    rest = [await store.enqueue("jobs", {"job_type": "echo"}) for _ in range(2)]
    async with working(parts):
        await until(lambda: all(status(store, i) == "completed" for i in [first, *rest]))
        await until(lambda: status(store, bad) == "failed")
    assert all(store.row("jobs", i)["attempts"] == 1 for i in [first, *rest])  # from that one claim
    assert sorted(ran) == sorted([first, *rest])


async def serve_limited(store: MemoryStore, **overrides: Any) -> tuple[int, list[str]]:
    """Run three jobs of a type declaring `concurrency=1` on a worker with room for five; the most
    that ran at once, and the warnings logged."""
    app = Reactor()
    now, most = 0, 0

    @app.handler("one", concurrency=1)
    async def one(job: Job) -> None:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await anyio.sleep(0.05)
        now -= 1

    ids = [await store.enqueue("jobs", {"job_type": "one"}) for _ in range(3)]
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        async with serving(app, store, concurrency=5, **overrides):
            await until(lambda: all(status(store, i) == "completed" for i in ids))
    finally:
        logger.remove(sink)
    return most, warnings


async def test_a_handlers_declared_limits_are_in_the_database_before_its_first_claim() -> None:
    store = MemoryStore()
    most, warnings = await serve_limited(store)
    assert most == 1
    assert store.limits[("jobs", "one")] == {"concurrency": 1, "paused": False}
    assert store.calls[("reactor_declare_limits", "ok")] == 1  # once, not before every claim
    assert warnings == []


async def test_limits_the_database_holds_apply_over_the_declared_ones_with_a_warning() -> None:
    store = MemoryStore()
    store.limits[("jobs", "one")] = {"concurrency": 3, "paused": False}  # set with `reactor limit`
    most, warnings = await serve_limited(store)
    assert most == 3
    assert warnings == [
        "limits for one in jobs: the database holds {'concurrency': 3, 'paused': False},"
        " not the declared {'concurrency': 1}; the database's apply (reactor limit)"
    ]


class DeclareDown(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = 2

    async def declare_limits(self, table: str, limits: dict[str, dict[str, int]]) -> dict[str, Any]:
        if self.down:
            self.down -= 1
            self.calls[("reactor_declare_limits", "unavailable")] += 1
            raise Unavailable("reactor_declare_limits: cannot reach the API: ConnectError")
        return await super().declare_limits(table, limits)


async def test_no_claim_is_made_until_the_declared_limits_are_in_the_database() -> None:
    store = DeclareDown()
    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")
    try:
        most, _ = await serve_limited(store)
    finally:
        logger.remove(sink)
    assert most == 1
    assert store.calls[("reactor_declare_limits", "unavailable")] == 2
    assert store.calls[("reactor_declare_limits", "ok")] == 1
    assert errors == [
        "cannot claim jobs: reactor_declare_limits: cannot reach the API: ConnectError; retrying on the next tick"
    ]


class ClaimsDown(MemoryStore):
    """Ticks fail while `down`, as an unreachable API's do."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def tick(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.down:
            self.calls[("reactor_tick", "unavailable")] += 1
            raise Unavailable("reactor_tick: cannot reach the API: ConnectError")
        return await super().tick(*args, **kwargs)


async def test_the_api_coming_back_is_logged_once_and_going_away_again_is_complained_of_again() -> None:
    app, _ = echo_app()
    store = ClaimsDown()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        async with serving(app, store) as served:
            for down in (False, True, False, True, False):
                store.down = down
                key = ("reactor_tick", "unavailable" if down else "ok")
                seen = store.calls[key]
                await until(lambda key=key, seen=seen: store.calls[key] >= seen + 3)
                assert served.worker.dispatcher.api_ok is not down
    finally:
        logger.remove(sink)
    claiming = [line for line in lines if line.startswith("claiming from table")]
    complaints = [line for line in lines if line.startswith("cannot claim jobs")]
    assert claiming == ["claiming from table jobs"] * 3
    assert (
        complaints
        == ["cannot claim jobs: reactor_tick: cannot reach the API: ConnectError; retrying on the next tick"]
        * 2
    )


class ReleaseDown(MemoryStore):
    async def release(self, table: str, leases: list[dict[str, Any]]) -> dict[str, Any]:
        raise Unavailable("reactor_release: cannot reach the API: ConnectError")


async def test_a_hand_off_that_cannot_be_handed_back_is_left_to_lapse_with_a_warning() -> None:
    gate = anyio.Event()
    app, _ = echo_app(gate)
    store = ReleaseDown()
    parts = Parts(app, store, concurrency=1)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        async with working(parts):
            _, record = await parts.hand_off()
            parts.dispatcher.take("jobs", record)  # the one slot is free: it runs
            job_id, record = await parts.hand_off()
            parts.dispatcher.take("jobs", record)  # no slot: handed back, which fails
            await until(lambda: any("could not hand back" in w for w in warnings))
            gate.set()
    finally:
        logger.remove(sink)
    assert (
        f"could not hand back job {job_id} in jobs; its hand-off lapses:"
        " reactor_release: cannot reach the API: ConnectError"
    ) in warnings
