"""The reporter on the in-memory store: outcomes recorded in batches, retried while the API is down,
a refused batch split so one bad item costs only its own job, and given up on at shutdown."""

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

from reactor.job import Job
from reactor.memory import MemoryStore
from reactor.redact import Redactor
from reactor.reporter import Report, Reporter
from reactor.store import MAX_BATCH, Rejected, Unavailable

pytestmark = pytest.mark.anyio


class Recording(MemoryStore):
    """The memory store, recording each outcome call; `down` calls fail as an unreachable API's
    do, and `refuse` may refuse a batch as the API refuses one (HTTP 4xx)."""

    def __init__(self) -> None:
        super().__init__(("jobs", "other"))
        self.batches: list[tuple[str, str, list[int]]] = []  # (function, table, ids)
        self.times: list[float] = []
        self.down = 0
        self.refuse: Callable[[str, list[dict[str, Any]]], Rejected | None] = lambda name, items: None

    async def _call(self, name: str, table: str, items: list[dict[str, Any]], call: Any) -> dict[str, Any]:
        self.batches.append((name, table, [item["id"] for item in items]))
        self.times.append(time.monotonic())
        if self.down:
            self.down -= 1
            raise Unavailable(f"reactor_{name}: cannot reach the API: ConnectError")
        refusal = self.refuse(name, items)
        if refusal is not None:
            raise refusal
        return await call(table, items)

    async def complete(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call("complete", table, jobs, super().complete)

    async def fail(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call("fail", table, jobs, super().fail)

    async def snooze(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call("snooze", table, jobs, super().snooze)


async def claimed(store: MemoryStore, n: int, table: str = "jobs", max_attempts: int = 5) -> list[Job]:
    for _ in range(n):
        await store.enqueue(table, {"job_type": "echo", "max_attempts": max_attempts})
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        rows += await store.claim(table, "w1", ["echo"], min(n - len(rows), MAX_BATCH), 60)
    jobs = []
    for row in rows:
        job = Job(row["id"], table, "echo", row["payload"], row["attempt"], max_attempts, row["lease_token"])
        job.log_context = {
            "job_id": job.id,
            "table": table,
            "job_type": "echo",
            "attempt": job.attempt,
            "worker_id": "w1",
        }
        jobs.append(job)
    return jobs


def lease(job: Job) -> dict[str, Any]:
    return {"id": job.id, "lease_token": job.lease_token}


def completed(job: Job, result: Any = "ok") -> Report:
    return Report("complete", job.table, {**lease(job), "result": result}, job, fields("completed"))


def failed(
    job: Job, error: str = "broke", permanent: bool = False, retry_at: datetime | None = None
) -> Report:
    item: dict[str, Any] = {**lease(job), "error": error}
    if permanent:
        item["permanent"] = True
    else:
        item["retry_at"] = (retry_at or datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return Report("fail", job.table, item, job, fields("failed" if permanent else "retried"))


def snoozed(job: Job, error: str = "not yet", until: datetime | None = None) -> Report:
    at = (until or datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return Report("snooze", job.table, {**lease(job), "error": error, "retry_at": at}, job, fields("snoozed"))


def fields(outcome: str) -> dict[str, Any]:
    return {"outcome": outcome, "duration_ms": 1.5}


def reporter(store: MemoryStore, give_up: float = 5.0, secrets: tuple[str, ...] = ()) -> Reporter:
    return Reporter(store, give_up_seconds=give_up, redactor=Redactor(secrets), wake=lambda table: None)


@asynccontextmanager
async def running(reporter: Reporter) -> AsyncIterator[Reporter]:
    """Run the reporter; on leaving, close it and wait until it has sent everything (or given up)."""
    with anyio.fail_after(30):  # a safety net against a hung reporter, not a timing assertion
        async with anyio.create_task_group() as group:
            group.start_soon(reporter.run)
            yield reporter
            reporter.close()
            await reporter.drained()


@asynccontextmanager
async def logged(level: str = "DEBUG") -> AsyncIterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []

    def sink(message: Any) -> None:
        record = message.record
        lines.append({"level": record["level"].name, "message": record["message"], **record["extra"]})

    handle = logger.add(sink, level=level)
    try:
        yield lines
    finally:
        logger.remove(handle)


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.005)
    return value


def status(store: MemoryStore, job: Job) -> str:
    return store.row(job.table, job.id)["status"]


async def test_outcomes_that_wait_together_are_sent_in_batches_of_at_most_max_batch() -> None:
    store = Recording()
    jobs = await claimed(store, 2 * MAX_BATCH + 345)
    sender = reporter(store)
    for job in jobs:
        sender.submit(completed(job, {"n": job.id}))
    async with running(sender):
        pass
    assert [(name, len(ids)) for name, _, ids in store.batches] == [
        ("complete", MAX_BATCH),
        ("complete", MAX_BATCH),
        ("complete", 345),
    ]
    assert all(store.row("jobs", job.id)["result"] == {"n": job.id} for job in jobs)


async def test_each_kind_of_outcome_in_each_table_goes_in_one_call() -> None:
    store = Recording()
    a, b, c, d = await claimed(store, 4)
    (e,) = await claimed(store, 1, table="other")
    sender = reporter(store)
    for report in (completed(a), failed(b), snoozed(c), completed(d), failed(e, permanent=True)):
        sender.submit(report)
    async with running(sender):
        pass
    assert sorted(store.batches) == [
        ("complete", "jobs", [a.id, d.id]),
        ("fail", "jobs", [b.id]),
        ("fail", "other", [e.id]),
        ("snooze", "jobs", [c.id]),
    ]
    assert [status(store, job) for job in (a, b, c, d, e)] == [
        "completed",
        "pending",
        "pending",
        "completed",
        "failed",
    ]
    assert store.row("jobs", c.id)["attempts"] == 0  # a snooze gives the attempt back


async def test_a_refused_batch_is_split_so_one_bad_result_fails_alone_and_the_rest_are_recorded() -> None:
    store = Recording()
    jobs = await claimed(store, 5)
    bad = jobs[2]

    def refuse(name: str, items: list[dict[str, Any]]) -> Rejected | None:
        # As Postgres parses the whole request: a call carrying the bad result anywhere is refused.
        if any(item.get("result") == "bad" for item in items):
            return Rejected(f"reactor_{name}: unsupported Unicode escape sequence (HTTP 400)", 400)
        return None

    store.refuse = refuse
    sender = reporter(store)
    for job in jobs:
        sender.submit(completed(job, "bad" if job is bad else f"good {job.id}"))
    async with logged("WARNING") as lines, running(sender):
        pass
    for job in jobs:
        if job is not bad:
            assert (status(store, job), store.row("jobs", job.id)["result"]) == (
                "completed",
                f"good {job.id}",
            )
    row = store.row("jobs", bad.id)
    assert (row["status"], row["attempts"]) == ("failed", 1)  # for good, though attempts are left
    assert row["last_error"] == (
        "the result could not be recorded: reactor_complete: unsupported Unicode escape sequence (HTTP 400)"
    )
    assert [(line["level"], line["job_id"], line["outcome"], line["message"]) for line in lines] == [
        (
            "ERROR",
            bad.id,
            "completed",
            "the result could not be recorded; failing the job:"
            " reactor_complete: unsupported Unicode escape sequence (HTTP 400)",
        ),
        (
            "WARNING",
            bad.id,
            "failed",
            "job failed for good: the result could not be recorded:"
            " reactor_complete: unsupported Unicode escape sequence (HTTP 400)",
        ),
    ]
    # The first call carried all five; then each went alone, the bad one followed by its failure.
    assert store.batches[0] == ("complete", "jobs", [job.id for job in jobs])
    assert sorted(store.batches[1:]) == sorted(
        [("complete", "jobs", [job.id]) for job in jobs] + [("fail", "jobs", [bad.id])]
    )
    assert sender.leases() == {}


async def test_a_refusal_reason_is_cut_to_two_thousand_characters_in_the_row() -> None:
    store = Recording()
    (job,) = await claimed(store, 1)
    long = "x" * 5000
    store.refuse = lambda name, items: Rejected(long, 400) if name == "complete" else None
    sender = reporter(store)
    sender.submit(completed(job))
    async with running(sender):
        pass
    error = store.row("jobs", job.id)["last_error"]
    assert error == f"the result could not be recorded: {long}"[:2000]


@pytest.mark.parametrize("status_code", [401, 403])
async def test_a_result_refused_for_the_key_is_not_failed_but_left_to_the_reaper(status_code: int) -> None:
    store = Recording()
    (job,) = await claimed(store, 1)
    refusal = Rejected(f"reactor_complete: permission denied (HTTP {status_code})", status_code)
    store.refuse = lambda name, items: refusal
    sender = reporter(store)
    sender.submit(completed(job))
    async with logged("ERROR") as lines, running(sender):
        await until(lambda: sender.leases() == {})  # not retried, and its lease no longer kept
    assert status(store, job) == "processing"
    assert [name for name, _, _ in store.batches] == ["complete"]
    assert [(line["job_id"], line["message"]) for line in lines] == [
        (job.id, f"could not record the outcome: reactor_complete: permission denied (HTTP {status_code})")
    ]


async def test_a_refused_failure_is_logged_and_left_to_the_reaper() -> None:
    store = Recording()
    a, b = await claimed(store, 2)
    store.refuse = lambda name, items: Rejected("reactor_fail: bad (HTTP 400)", 400)
    sender = reporter(store)
    sender.submit(failed(a))
    sender.submit(failed(b, permanent=True))
    async with logged("ERROR") as lines, running(sender):
        pass
    assert [status(store, job) for job in (a, b)] == ["processing", "processing"]
    assert store.batches == [
        ("fail", "jobs", [a.id, b.id]),
        ("fail", "jobs", [a.id]),
        ("fail", "jobs", [b.id]),
    ]
    assert [(line["job_id"], line["outcome"], line["message"]) for line in lines] == [
        (a.id, "retried", "could not record the outcome: reactor_fail: bad (HTTP 400)"),
        (b.id, "failed", "could not record the outcome: reactor_fail: bad (HTTP 400)"),
    ]
    assert sender.leases() == {}


async def test_outcomes_are_retried_with_a_doubling_wait_while_the_api_is_down() -> None:
    store = Recording()
    (job,) = await claimed(store, 1)
    store.down = 4
    sender = reporter(store)
    sender.submit(completed(job))
    assert sender.leases() == {"jobs": [lease(job)]}  # kept alive by the lease keeper meanwhile
    async with logged("WARNING") as lines, running(sender):
        await until(lambda: status(store, job) == "completed")
    assert sender.leases() == {}
    gaps = [later - earlier for earlier, later in pairwise(store.times)]
    assert len(gaps) == 4
    for gap, wait in zip(gaps, [0.1, 0.2, 0.4, 0.8], strict=True):
        assert wait <= gap < wait + 0.5
    assert [line["message"] for line in lines] == [
        "recording 1 outcomes failed, retrying: reactor_complete: cannot reach the API: ConnectError"
    ] * 4


async def test_a_refused_outcome_is_not_retried() -> None:
    store = Recording()
    (job,) = await claimed(store, 1)
    store.refuse = lambda name, items: Rejected("reactor_snooze: bad (HTTP 400)", 400)
    sender = reporter(store)
    sender.submit(snoozed(job))
    async with running(sender):
        pass
    assert store.batches == [("snooze", "jobs", [job.id])]


async def test_what_is_queued_at_shutdown_is_sent_before_the_reporter_stops() -> None:
    store = Recording()
    jobs = await claimed(store, 3)
    sender = reporter(store)
    async with anyio.create_task_group() as group:
        group.start_soon(sender.run)
        for job in jobs:
            sender.submit(completed(job))
        sender.close()
        with anyio.fail_after(10):
            await sender.drained()
    assert [status(store, job) for job in jobs] == ["completed"] * 3


async def test_at_shutdown_outcomes_the_api_never_takes_are_given_up_after_the_limit() -> None:
    store = Recording()
    a, b = await claimed(store, 2)
    (c,) = await claimed(store, 1, table="other")
    store.down = 10**9
    sender = reporter(store, give_up=0.5)
    async with logged("ERROR") as lines:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(sender.run)
                for report in (completed(a), failed(b), completed(c)):
                    sender.submit(report)
                await until(lambda: len(store.batches) >= 2)
                closed = time.monotonic()
                sender.close()
                await sender.drained()
                gave_up = time.monotonic() - closed
    assert 0.5 <= gave_up < 3.0
    assert sender.leases() == {}
    message = "outcome lost at shutdown: the API stayed unreachable; the reaper will hand the job back"
    assert sorted((line["table"], line["job_id"], line["message"]) for line in lines) == [
        ("jobs", a.id, message),
        ("jobs", b.id, message),
        ("other", c.id, message),
    ]


async def test_errors_are_stored_redacted_and_results_as_they_are() -> None:
    store = Recording()
    a, b, c = await claimed(store, 3)
    sender = reporter(store, secrets=("s3cret",))
    sender.submit(failed(a, "token s3cret refused\x00"))
    sender.submit(snoozed(b, "waiting on s3cret"))
    sender.submit(completed(c, {"echo": "s3cret"}))
    async with running(sender):
        pass
    assert store.row("jobs", a.id)["last_error"] == "token [REDACTED] refused\ufffd"
    assert store.row("jobs", b.id)["status"] == "pending"
    assert store.row("jobs", c.id)["result"] == {"echo": "s3cret"}  # the owner's own data, untouched


async def test_snooze_errors_are_redacted_before_they_are_sent() -> None:
    store = Recording()
    (job,) = await claimed(store, 1)
    sent: list[dict[str, Any]] = []
    real = store.snooze

    async def snooze(table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        sent.extend(jobs)
        return await real(table, jobs)

    store.snooze = snooze  # type: ignore[method-assign]
    sender = reporter(store, secrets=("s3cret",))
    sender.submit(snoozed(job, "waiting on s3cret"))
    async with running(sender):
        pass
    assert [item["error"] for item in sent] == ["waiting on [REDACTED]"]


async def test_each_outcome_writes_its_jobs_log_line() -> None:
    store = Recording()
    done, retried, dead, spent, later, stale = await claimed(store, 6, max_attempts=1)
    store.tables["jobs"][retried.id].max_attempts = 5  # attempts left: the failure is retried
    store.tables["jobs"][stale.id].lease_token = "00000000-0000-4000-8000-00000000beef"  # reaped
    retry_at = datetime.now(UTC) + timedelta(hours=1)
    sender = reporter(store)
    reports = [
        completed(done),
        failed(retried, "try again", retry_at=retry_at),
        failed(dead, "never", permanent=True),
        failed(spent, "last try", retry_at=retry_at),
        snoozed(later, until=retry_at),
        completed(stale),
    ]
    for report in reports:
        sender.submit(report)
    async with logged() as lines, running(sender):
        pass
    by_job = {line["job_id"]: line for line in lines}
    assert set(by_job) == {job.id for job in (done, retried, dead, spent, later, stale)}
    for line in by_job.values():
        assert (line["table"], line["job_type"], line["attempt"], line["worker_id"]) == (
            "jobs",
            "echo",
            1,
            "w1",
        )
        assert line["duration_ms"] == 1.5
    expected = {
        done.id: ("INFO", "completed", "job completed"),
        retried.id: ("WARNING", "retried", f"job will be retried at {retry_at.isoformat()}: try again"),
        dead.id: ("WARNING", "failed", "job failed for good: never"),
        spent.id: ("WARNING", "failed", "job failed for good: last try"),
        later.id: ("INFO", "snoozed", f"job snoozed until {retry_at.isoformat()}, its attempt unspent"),
        stale.id: ("WARNING", "stale", "lease lost before the outcome was recorded; discarded"),
    }
    assert {i: (line["level"], line["outcome"], line["message"]) for i, line in by_job.items()} == expected
