"""Spawning and fan-in without a database: the checks a child passes before reactor_spawn sees it,
its default key, and reactor.testing running both halves of a fan-in handler."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest
from loguru import logger

from reactor import Child, Job, Reactor, WaitForChildren
from reactor.family import Family, checked
from reactor.memory import MemoryStore
from reactor.redact import Redactor
from reactor.reporter import Report, Reporter
from reactor.retry import RetryPolicy
from reactor.testing import perform

pytestmark = pytest.mark.anyio
app = Reactor()


@app.handler("quote_all")
async def quote_all(job: Job) -> dict:
    if not job.resumed:
        for term in job.payload["terms"]:
            await job.spawn("quote", {"term": term})
        await job.spawn("audit", key="audit", priority=-1)
        raise WaitForChildren()
    return {c.key: c.result for c in await job.children() if c.status == "completed"}


async def test_the_first_run_spawns_and_waits_and_the_resumed_run_reads_the_outcomes() -> None:
    first = await perform(app, "quote_all", {"terms": [24, 36]})
    assert first.outcome.kind == "waiting"
    assert first.spawned == [
        {"job_type": "quote", "payload": {"term": 24}, "key": "0.0"},
        {"job_type": "quote", "payload": {"term": 36}, "key": "0.1"},
        {"job_type": "audit", "payload": {}, "key": "audit", "priority": -1},
    ]
    outcomes = [
        Child(2, "0.0", "quote", "completed", 1, 240, None, datetime.now(UTC)),
        Child(3, "0.1", "quote", "failed", 5, None, "timeout", datetime.now(UTC)),
    ]
    second = await perform(app, "quote_all", {"terms": [24, 36]}, resumed=1, children=outcomes)
    assert (second.outcome.kind, second.outcome.result) == ("completed", {"0.0": 240})


@app.handler("rounds")
async def rounds(job: Job) -> None:
    await job.spawn("step")
    await job.spawn("step")
    raise WaitForChildren()


async def test_a_resumed_run_keys_its_new_children_apart_from_the_first_runs() -> None:
    again = await perform(app, "rounds", resumed=2)
    assert [c["key"] for c in again.spawned] == ["2.0", "2.1"]


@pytest.mark.parametrize(
    "child, error",
    [
        ({"job_type": ""}, "job_type is 1 to 200 characters"),
        ({"job_type": 7}, "job_type is 1 to 200 characters"),
        ({"job_type": "q", "key": ""}, "key is 1 to 200 characters"),
        ({"job_type": "q", "priority": 2**31}, "priority is a 32-bit whole number"),
        ({"job_type": "q", "priority": True}, "priority is a 32-bit whole number"),
        ({"job_type": "q", "run_at": datetime(2030, 1, 1)}, "run_at is a timezone-aware datetime"),
        ({"job_type": "q", "max_attempts": 0}, "max_attempts is from 1 to 1000"),
        ({"job_type": "q", "max_attempts": 1001}, "max_attempts is from 1 to 1000"),
    ],
)
def test_a_child_reactor_spawn_would_refuse_is_refused_here_with_what_is_wrong(child, error) -> None:
    with pytest.raises(ValueError, match=error):
        checked(child)


def test_a_child_as_reactor_spawn_takes_it() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert checked({"job_type": "q", "payload": [], "priority": -3, "run_at": at, "max_attempts": 1000}) == {
        "job_type": "q",
        "payload": [],
        "key": None,
        "priority": -3,
        "run_at": at.isoformat(),
        "max_attempts": 1000,
    }


async def test_an_unknown_argument_and_too_many_children_are_refused_before_any_request() -> None:
    store = MemoryStore()
    job = Job(1, "jobs", "parent", {}, 1, 5, "00000000-0000-4000-8000-000000000001")
    family = Family(store, job)
    with pytest.raises(ValueError, match=r"a child takes \[.*\], not \['delay'\]"):
        await family.spawn([{"job_type": "q", "delay": 5}])
    with pytest.raises(ValueError, match="at most 1000 children, not 1001"):
        await family.spawn({"job_type": "q"} for _ in range(1001))
    assert sum(n for (function, _), n in store.calls.items() if function == "reactor_spawn") == 0
    assert await family.spawn([]) == []


async def test_a_job_with_no_worker_says_it_has_no_children() -> None:
    job = Job(1, "jobs", "parent", {}, 1, 5, "00000000-0000-4000-8000-000000000001")
    with pytest.raises(RuntimeError, match="not claimed by a worker"):
        await job.spawn("q")
    assert job.spawned == 0


async def test_the_outcome_that_resumes_a_parent_wakes_a_claim_of_its_table_and_no_other_does() -> None:
    store = MemoryStore()
    await store.enqueue("jobs", {"job_type": "parent"})
    [parent] = await store.claim("jobs", "w1", ["parent"], 1, 60)
    ids = (
        await store.spawn(
            "jobs",
            parent["id"],
            parent["lease_token"],
            [{"job_type": "c", "key": "a"}, {"job_type": "c", "key": "b"}],
        )
    )["ids"]
    await store.wait("jobs", [{"id": parent["id"], "lease_token": parent["lease_token"]}])
    first, second = await store.claim("jobs", "w1", ["c"], 2, 60)
    woken: list[str] = []
    reporter = Reporter(store, 1.0, Redactor([]), wake=woken.append)
    job = Job(first["id"], "jobs", "c", {}, 1, 5, first["lease_token"])
    async with anyio.create_task_group() as group:
        group.start_soon(reporter.run)
        reporter.submit(
            Report("complete", "jobs", {"id": first["id"], "lease_token": first["lease_token"]}, job, {})
        )
        await anyio.wait_all_tasks_blocked()
        assert woken == []  # a sibling still runs
        reporter.submit(
            Report("complete", "jobs", {"id": second["id"], "lease_token": second["lease_token"]}, job, {})
        )
        reporter.close()
        await reporter.drained()
    assert woken == ["jobs"]
    assert store.row("jobs", parent["id"])["status"] == "pending" and ids == [first["id"], second["id"]]


@app.handler("lonely")
async def lonely(job: Job) -> None:
    raise WaitForChildren()


@app.handler("patient", retry=RetryPolicy(base_seconds=60, cap_seconds=60))
async def patient(job: Job) -> None:
    raise ValueError("not yet")


async def test_waiting_without_a_child_fails_the_attempt_and_on_the_last_one_for_good() -> None:
    reason = "WaitForChildren: the handler waited without spawning a child in this run"
    retried = await perform(app, "lonely", policy=RetryPolicy(base_seconds=0.001, cap_seconds=0.001))
    assert (retried.outcome.kind, retried.outcome.error) == ("retried", reason)
    last = await perform(app, "lonely", attempt=5, max_attempts=5)
    assert (last.outcome.kind, last.outcome.error) == ("failed", reason)


async def test_a_waiting_outcome_sends_no_fields_beyond_the_lease() -> None:
    first = await perform(app, "quote_all", {"terms": [12]})
    assert (first.outcome.kind, first.outcome.item()) == ("waiting", {})


async def test_a_handlers_own_retry_policy_sets_the_retry_time_not_the_workers() -> None:
    quick = RetryPolicy(base_seconds=0.001, cap_seconds=0.001)
    delays = []
    for _ in range(3):
        done = await perform(app, "patient", policy=quick)
        delays.append((done.outcome.retry_at - datetime.now(UTC)).total_seconds())
    # Full jitter up to 60 s: three draws all under 10 ms would be one chance in 2e11.
    assert max(delays) > 0.01 and all(d <= 60 for d in delays)


async def test_a_wait_is_logged_as_waiting_or_as_running_again_when_the_children_are_done() -> None:
    store = MemoryStore()
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        reporter = Reporter(store, 1.0, Redactor([]), wake=lambda table: None)
        for key in ("busy", "done"):
            await store.enqueue("jobs", {"job_type": "parent"})
            [parent] = await store.claim("jobs", "w1", ["parent"], 1, 60)
            await store.spawn("jobs", parent["id"], parent["lease_token"], [{"job_type": key, "key": "a"}])
            if key == "done":
                [child] = await store.claim("jobs", "w1", ["done"], 1, 60)
                await store.complete("jobs", [{"id": child["id"], "lease_token": child["lease_token"]}])
            job = Job(parent["id"], "jobs", "parent", {}, 1, 5, parent["lease_token"])
            lease = {"id": parent["id"], "lease_token": parent["lease_token"]}
            async with anyio.create_task_group() as group:
                group.start_soon(reporter.run)
                reporter.submit(Report("wait", "jobs", lease, job, {"outcome": "waiting"}))
                await anyio.wait_all_tasks_blocked()
                group.cancel_scope.cancel()
    finally:
        logger.remove(sink)
    assert [line for line in lines if "children" in line] == [
        "job waits for its children, its attempt unspent",
        "job's children have all finished; it runs again",
    ]
