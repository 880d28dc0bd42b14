"""The lease keeper on the in-memory store: heartbeats in batches every lease/3 for running jobs and
for finished ones whose outcome waits, a stale lease cancelling its job, and hand-offs confirmed at
once, retried while the API is down, and left to the database after the hand-off lease."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import anyio
import pytest
from loguru import logger

from reactor import lease_keeper
from reactor.handlers import Handler
from reactor.job import Job
from reactor.lease_keeper import LeaseKeeper
from reactor.memory import MemoryStore
from reactor.running import Running, RunningJobs
from reactor.store import MAX_BATCH, Unavailable

pytestmark = pytest.mark.anyio


class Beating(MemoryStore):
    """The memory store, recording each heartbeat; while `down` it fails as an unreachable API does
    (`down` calls, or every call while `down` is True)."""

    def __init__(self) -> None:
        super().__init__(("jobs", "other"))
        self.beats: list[tuple[str, list[int], float]] = []  # (table, ids, when)
        self.down: int | bool = 0

    async def heartbeat(self, table: str, leases: list[dict[str, Any]], lease_seconds: int) -> dict[str, Any]:
        self.beats.append((table, [lease["id"] for lease in leases], time.monotonic()))
        if self.down:
            if self.down is not True:
                self.down -= 1
            raise Unavailable("reactor_heartbeat: cannot reach the API: ConnectError")
        return await super().heartbeat(table, leases, lease_seconds)


async def noop(job: Job) -> None:
    pass


HANDLER = Handler("echo", noop, "jobs", None, None, None)


async def claim(store: MemoryStore, n: int, table: str = "jobs") -> list[Job]:
    for _ in range(n):
        await store.enqueue(table, {"job_type": "echo"})
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        rows += await store.claim(table, "w1", ["echo"], min(n - len(rows), MAX_BATCH), 60)
    return [Job(r["id"], table, "echo", r["payload"], r["attempt"], 5, r["lease_token"]) for r in rows]


def run_all(running: RunningJobs, jobs: list[Job], hand_off: bool = False) -> list[Running]:
    started = []
    for job in jobs:
        job.log_context = {"job_id": job.id, "table": job.table, "worker_id": "w1"}
        started.append(Running(job, HANDLER, confirmed=anyio.Event() if hand_off else None))
        running.add(started[-1])
    return started


def lease(job: Job) -> dict[str, Any]:
    return {"id": job.id, "lease_token": job.lease_token}


def expires(store: MemoryStore, job: Job) -> datetime:
    return store.row(job.table, job.id)["lease_expires_at"]


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.005)
    return value


@asynccontextmanager
async def logged(level: str = "WARNING") -> AsyncIterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    handle = logger.add(
        lambda m: lines.append({"message": m.record["message"], **m.record["extra"]}), level=level
    )
    try:
        yield lines
    finally:
        logger.remove(handle)


@asynccontextmanager
async def keeping(keeper: LeaseKeeper) -> AsyncIterator[LeaseKeeper]:
    with anyio.fail_after(30):  # a safety net against a hung test, not a timing assertion
        async with anyio.create_task_group() as group:
            group.start_soon(keeper.run)
            yield keeper
            group.cancel_scope.cancel()


async def test_a_beat_extends_every_lease_held_in_batches_of_at_most_max_batch() -> None:
    store, running = Beating(), RunningJobs()
    jobs = await claim(store, 2 * MAX_BATCH + 10)
    others = await claim(store, 2, table="other")
    run_all(running, jobs + others)
    before = datetime.now(UTC)
    await LeaseKeeper(store, running, dict, 120).beat()
    assert sorted((table, len(ids)) for table, ids, _ in store.beats) == [
        ("jobs", 10),
        ("jobs", MAX_BATCH),
        ("jobs", MAX_BATCH),
        ("other", 2),
    ]
    for job in jobs + others:
        assert (
            before + timedelta(seconds=119)
            < expires(store, job)
            <= datetime.now(UTC) + timedelta(seconds=120)
        )


async def test_a_beat_keeps_the_leases_of_finished_jobs_whose_outcome_waits() -> None:
    store, running = Beating(), RunningJobs()
    running_job, finished, elsewhere = await claim(store, 3)
    (other,) = await claim(store, 1, table="other")
    run_all(running, [running_job])
    waiting = {"jobs": [lease(finished), lease(elsewhere)], "other": [lease(other)]}
    await LeaseKeeper(store, running, lambda: waiting, 60).beat()
    assert sorted((table, sorted(ids)) for table, ids, _ in store.beats) == [
        ("jobs", sorted([running_job.id, finished.id, elsewhere.id])),  # one request a table
        ("other", [other.id]),
    ]


async def test_a_job_listed_twice_is_beaten_once_with_its_latest_lease() -> None:
    """A finished job's outcome waits (the API is down) while the job is reaped and this worker
    claims it again: both leases are listed, and a batch naming a job twice is refused whole."""
    store, running = Beating(), RunningJobs()
    (job,) = await claim(store, 1)
    first = lease(job)
    store.tables["jobs"][job.id].status = "pending"  # reaped
    (again,) = await store.claim("jobs", "w1", ["echo"], 1, 60)
    rerun = Job(again["id"], "jobs", "echo", {}, again["attempt"], 5, again["lease_token"])
    run_all(running, [rerun])
    waiting = {"jobs": [first, first]}  # and an earlier outcome of the same run, listed again
    async with logged() as lines:
        await LeaseKeeper(store, running, lambda: waiting, 60).beat()
    assert [ids for _, ids, _ in store.beats] == [[job.id]] and lines == []
    assert not any(r.lost for r in running)


async def test_a_failed_heartbeat_batch_is_logged_and_the_next_is_still_sent() -> None:
    store, running = Beating(), RunningJobs()
    jobs = await claim(store, MAX_BATCH + 1)
    run_all(running, jobs)
    first = expires(store, jobs[-1])
    store.down = 1
    async with logged() as lines:
        await LeaseKeeper(store, running, dict, 60).beat()
    assert [len(ids) for _, ids, _ in store.beats] == [MAX_BATCH, 1]
    assert expires(store, jobs[-1]) > first
    assert [line["message"] for line in lines] == [
        f"heartbeat for {MAX_BATCH} jobs in jobs failed: reactor_heartbeat: cannot reach the API: ConnectError"
    ]
    assert not any(r.lost for r in running)


async def test_a_stale_lease_cancels_its_job_and_only_it() -> None:
    store, running = Beating(), RunningJobs()
    reaped, kept = await claim(store, 2)
    lost, fine = run_all(running, [reaped, kept])
    store.tables["jobs"][reaped.id].lease_token = "00000000-0000-4000-8000-00000000beef"
    async with logged() as lines:
        await LeaseKeeper(store, running, dict, 60).beat()
    assert (lost.lost, lost.scope.cancel_called) == (True, True)
    assert (fine.lost, fine.scope.cancel_called) == (False, False)
    assert [(line["job_id"], line["outcome"]) for line in lines] == [(reaped.id, "lost")]
    # A lost job's lease is not beaten again.
    await LeaseKeeper(store, running, dict, 60).beat()
    assert store.beats[-1][1] == [kept.id]


async def test_heartbeats_come_every_third_of_the_lease() -> None:
    store, running = Beating(), RunningJobs()
    run_all(running, await claim(store, 1))
    async with keeping(LeaseKeeper(store, running, dict, 1)):
        started = time.monotonic()
        await until(lambda: len(store.beats) == 3)
    times = [started, *(when for _, _, when in store.beats)]
    for earlier, later in pairwise(times):
        assert 1 / 3 <= later - earlier < 1 / 3 + 0.3


async def test_hand_offs_are_confirmed_at_once_together_and_their_jobs_told() -> None:
    store, running = Beating(), RunningJobs()
    a, b = await claim(store, 2)
    (c,) = await claim(store, 1, table="other")
    hand_offs = run_all(running, [a, b, c], hand_off=True)
    async with keeping(LeaseKeeper(store, running, dict, 600)) as keeper:
        await anyio.sleep(0)
        asked = time.monotonic()
        for job in (a, b, c):
            keeper.confirm(job.table, lease(job))
        await until(lambda: all(h.confirmed.is_set() for h in hand_offs))
        assert time.monotonic() - asked < 5  # not on the next beat, 200 s away
    assert sorted((table, sorted(ids)) for table, ids, _ in store.beats) == [
        ("jobs", sorted([a.id, b.id])),
        ("other", [c.id]),
    ]
    assert not any(h.lost for h in hand_offs)


async def test_a_hand_off_the_database_took_back_is_cancelled() -> None:
    store, running = Beating(), RunningJobs()
    gone, kept = await claim(store, 2)
    lost, fine = run_all(running, [gone, kept], hand_off=True)
    store.tables["jobs"][gone.id].lease_token = "00000000-0000-4000-8000-00000000beef"
    async with keeping(LeaseKeeper(store, running, dict, 600)) as keeper:
        keeper.confirm("jobs", lease(gone))
        keeper.confirm("jobs", lease(kept))
        await until(lambda: lost.confirmed.is_set() and fine.confirmed.is_set())
    assert (lost.lost, fine.lost) == (True, False)


async def test_a_confirmation_the_api_misses_is_tried_again_every_half_second() -> None:
    store, running = Beating(), RunningJobs()
    (job,) = await claim(store, 1)
    (hand_off,) = run_all(running, [job], hand_off=True)
    store.down = 2
    async with logged() as lines, keeping(LeaseKeeper(store, running, dict, 600)) as keeper:
        keeper.confirm("jobs", lease(job))
        await until(hand_off.confirmed.is_set)
    times = [when for _, _, when in store.beats]
    assert len(times) == 3
    for earlier, later in pairwise(times):
        assert 0.5 <= later - earlier < 0.5 + 0.4
    assert [line["message"] for line in lines] == [
        "confirming 1 hand-offs in jobs failed: reactor_heartbeat: cannot reach the API: ConnectError"
    ] * 2
    assert not hand_off.lost


async def test_past_the_hand_off_lease_a_confirmation_is_left_to_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lease_keeper, "HAND_OFF_SECONDS", 1.2)
    store, running = Beating(), RunningJobs()
    early, late = await claim(store, 2)
    first, second = run_all(running, [early, late], hand_off=True)
    store.down = True
    async with keeping(LeaseKeeper(store, running, dict, 600)) as keeper:
        keeper.confirm("jobs", lease(early))
        asked = time.monotonic()
        await until(lambda: len(store.beats) == 2)  # the first retry
        keeper.confirm("jobs", lease(late))
        await until(first.confirmed.is_set)
        given_up = time.monotonic() - asked
        assert not second.confirmed.is_set()  # its own hand-off lease runs on
        assert [ids for _, ids, _ in store.beats[:2]] == [[early.id], [early.id]]
        await until(second.confirmed.is_set)
        tries = len(store.beats)
        await anyio.sleep(1.2)  # past a few more retry periods: nothing is left to try
        assert len(store.beats) == tries
    assert 1.2 <= given_up < 1.2 + 0.5 + 0.6  # at the first retry past its hand-off lease
    assert not (first.lost or second.lost)


async def test_a_hand_off_after_a_confirmed_one_is_confirmed_at_once_too() -> None:
    store, running = Beating(), RunningJobs()
    a, b = await claim(store, 2)
    first, second = run_all(running, [a, b], hand_off=True)
    async with keeping(LeaseKeeper(store, running, dict, 600)) as keeper:
        keeper.confirm("jobs", lease(a))
        await until(first.confirmed.is_set)
        asked = time.monotonic()
        keeper.confirm("jobs", lease(b))
        await until(second.confirmed.is_set)
        assert time.monotonic() - asked < 0.4  # not after a retry's half-second pause
    assert [ids for _, ids, _ in store.beats] == [[a.id], [b.id]]


class OneTableDown(Beating):
    """Heartbeats in `jobs` fail once; the other table's succeed."""

    async def heartbeat(self, table: str, leases: list[dict[str, Any]], lease_seconds: int) -> dict[str, Any]:
        self.down = 1 if table == "jobs" and not any(t == "jobs" for t, _, _ in self.beats) else 0
        return await super().heartbeat(table, leases, lease_seconds)


async def test_a_failed_confirmation_is_retried_even_when_another_tables_succeeded() -> None:
    store, running = OneTableDown(), RunningJobs()
    (a,) = await claim(store, 1)
    (b,) = await claim(store, 1, table="other")
    first, second = run_all(running, [a, b], hand_off=True)
    async with keeping(LeaseKeeper(store, running, dict, 600)) as keeper:
        keeper.confirm("jobs", lease(a))
        keeper.confirm("other", lease(b))
        await until(lambda: first.confirmed.is_set() and second.confirmed.is_set())
    assert [table for table, _, _ in store.beats] == ["jobs", "other", "jobs"]


async def test_a_stale_lease_of_a_cancelled_job_stops_it_as_cancelled_on_a_beat_or_a_confirmation() -> None:
    store, running = Beating(), RunningJobs()
    beaten, confirmed, reaped = await claim(store, 3)
    (on_beat,) = run_all(running, [beaten])
    (on_confirm,) = run_all(running, [confirmed], hand_off=True)
    (taken,) = run_all(running, [reaped])
    for job in (beaten, confirmed):
        row = store.tables["jobs"][job.id]
        row.status, row.lease_token = "cancelled", None  # as reactor_cancel leaves it
    store.tables["jobs"][reaped.id].lease_token = "00000000-0000-4000-8000-00000000beef"
    async with logged() as lines:
        async with keeping(LeaseKeeper(store, running, dict, 600)) as keeper:
            keeper.confirm("jobs", lease(confirmed))
            await until(lambda: on_confirm.confirmed.is_set())
        assert (on_confirm.cancelled, on_beat.lost, taken.lost) == (
            True,
            False,
            False,
        )  # the confirmation's own
        await LeaseKeeper(store, running, dict, 60).beat()
    assert [(r.lost, r.cancelled) for r in (on_beat, on_confirm, taken)] == [
        (True, True),
        (True, True),
        (True, False),
    ]
    outcomes = {line["job_id"]: line["outcome"] for line in lines}
    assert outcomes == {beaten.id: "cancelled", confirmed.id: "cancelled", reaped.id: "lost"}


async def test_a_stale_answer_about_an_earlier_lease_leaves_a_later_attempt_alone() -> None:
    """The job was reaped and claimed again by this worker while a heartbeat naming its earlier
    lease travelled: the answer calls that lease stale, which says nothing of the later one."""
    store, running = Beating(), RunningJobs()
    [job] = await claim(store, 1)
    [earlier] = run_all(running, [job])
    later_job = Job(job.id, "jobs", "echo", {}, 2, 5, "00000000-0000-4000-8000-00000000beef")
    store.tables["jobs"][job.id].lease_token = later_job.lease_token
    beat, later = store.heartbeat, []

    async def in_flight(table: str, leases: list[dict[str, Any]], lease_seconds: int) -> dict[str, Any]:
        answer = await beat(table, leases, lease_seconds)
        later.extend(run_all(running, [later_job]))  # starts while the answer is on its way
        return answer

    store.heartbeat = in_flight  # type: ignore[method-assign]
    await LeaseKeeper(store, running, dict, 120).beat()
    assert [r.lost for r in (earlier, *later)] == [True, False]
    assert running.leases() == {"jobs": [lease(later_job)]}
    running.remove(earlier)  # the earlier attempt ends: the later one stays
    assert len(running) == 1
