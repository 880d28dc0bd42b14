"""One contract, two stores: the worker's calls over the API to the real SQL functions (`Store`, on
the local stack) and answered from memory (`MemoryStore`, which the worker's fast unit tests run
on). Every test here runs against both, so the in-memory double cannot drift from the database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest

from reactor.memory import MemoryStore
from reactor.store import JobStore, Rejected, Store

pytestmark = pytest.mark.anyio

Status = Callable[[int], Awaitable[dict[str, Any]]]


@pytest.fixture(params=["api", "memory"])
def store(request: pytest.FixtureRequest) -> tuple[JobStore, Status]:
    """A store and a reader of one job's row (status, attempts, run_at, last_error, result)."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
async def api_store(stack, db: asyncpg.Connection) -> AsyncIterator[tuple[JobStore, Status]]:
    api = Store(stack.url, stack.keys.service_role)

    async def read(job_id: int) -> dict[str, Any]:
        row = dict(await db.fetchrow("select * from public.jobs where id = $1", job_id))
        return {**row, "lease_token": None if row["lease_token"] is None else str(row["lease_token"])}

    try:
        yield api, read
    finally:
        await api.aclose()


@pytest.fixture
def memory_store() -> tuple[JobStore, Status]:
    memory = MemoryStore()

    async def read(job_id: int) -> dict[str, Any]:
        return memory.row("jobs", job_id)

    return memory, read


async def _claim(store: JobStore, types: list[str], limit: int = 10, lease: int = 60) -> list[dict[str, Any]]:
    return await store.claim("jobs", "w1", types, limit, lease)


def _lease(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": job["id"], "lease_token": job["lease_token"]}


async def test_claims_by_priority_then_run_at_then_id_and_never_more_than_asked(store):
    s, _ = store
    past = datetime.now(UTC) - timedelta(minutes=5)
    low = await s.enqueue("jobs", {"job_type": "t"})
    early = await s.enqueue("jobs", {"job_type": "t", "run_at": past.isoformat()})
    high = await s.enqueue("jobs", {"job_type": "t", "priority": 5})
    also_low = await s.enqueue("jobs", {"job_type": "t"})
    first = await _claim(s, ["t"], limit=3)
    assert [job["id"] for job in first] == [high, early, low]
    assert [job["id"] for job in await _claim(s, ["t"])] == [also_low]
    assert await _claim(s, ["t"]) == []


async def test_claims_only_the_types_asked_for_and_nothing_before_its_run_at(store):
    s, _ = store
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    await s.enqueue("jobs", {"job_type": "other"})
    await s.enqueue("jobs", {"job_type": "t", "run_at": later})
    wanted = await s.enqueue("jobs", {"job_type": "t", "payload": {"n": 1}, "max_attempts": 3})
    [job] = await _claim(s, ["t"])
    assert (job["id"], job["job_type"], job["payload"], job["attempt"], job["max_attempts"]) == (
        wanted,
        "t",
        {"n": 1},
        1,
        3,
    )
    uuid.UUID(job["lease_token"])


async def test_a_claim_for_no_jobs_is_rejected(store):
    s, _ = store
    with pytest.raises(Rejected, match="p_limit must be between 1 and 1000, got 0"):
        await _claim(s, ["t"], limit=0)


async def test_an_unknown_table_is_rejected_by_name(store):
    s, _ = store
    with pytest.raises(Rejected, match='unknown job table "nope"'):
        await s.claim("nope", "w1", ["t"], 1, 60)


async def test_complete_takes_the_current_lease_only(store):
    s, status = store
    ids = [await s.enqueue("jobs", {"job_type": "t"}) for _ in range(2)]
    jobs = await _claim(s, ["t"])
    stale = {"id": ids[1], "lease_token": str(uuid.uuid4())}
    answer = await s.complete("jobs", [{**_lease(jobs[0]), "result": {"ok": True}}, stale])
    assert answer == {"completed": [ids[0]], "stale": [ids[1]]}
    done = await status(ids[0])
    assert (done["status"], done["progress"], done["lease_token"]) == ("completed", 100, None)
    assert (await status(ids[1]))["status"] == "processing"


async def test_a_failed_attempt_goes_back_to_pending_at_its_retry_time(store):
    s, status = store
    job_id = await s.enqueue("jobs", {"job_type": "t"})
    [job] = await _claim(s, ["t"])
    retry_at = datetime.now(UTC) + timedelta(minutes=10)
    answer = await s.fail("jobs", [{**_lease(job), "error": "boom", "retry_at": retry_at.isoformat()}])
    assert answer == {"retried": [job_id], "failed": [], "stale": []}
    row = await status(job_id)
    assert (row["status"], row["last_error"], row["attempts"]) == ("pending", "boom", 1)
    assert abs((row["run_at"] - retry_at).total_seconds()) < 0.01
    assert await _claim(s, ["t"]) == []


async def test_a_failure_without_a_retry_time_backs_off_within_the_first_ceiling(store):
    s, status = store
    job_id = await s.enqueue("jobs", {"job_type": "t"})
    [job] = await _claim(s, ["t"])
    before = datetime.now(UTC)
    await s.fail("jobs", [{**_lease(job), "error": "boom"}])
    delay = ((await status(job_id))["run_at"] - before).total_seconds()
    assert -0.5 <= delay <= 2.5  # the first ceiling is the 2 s base


async def test_a_permanent_failure_or_the_last_attempt_goes_to_failed(store):
    s, status = store
    permanent = await s.enqueue("jobs", {"job_type": "p"})
    last = await s.enqueue("jobs", {"job_type": "l", "max_attempts": 1})
    [p] = await _claim(s, ["p"])
    [lj] = await _claim(s, ["l"])
    assert (await s.fail("jobs", [{**_lease(p), "error": "no", "permanent": True}]))["failed"] == [permanent]
    assert (await s.fail("jobs", [{**_lease(lj), "error": "again"}]))["failed"] == [last]
    for job_id in (permanent, last):
        row = await status(job_id)
        assert row["status"] == "failed" and row["completed_at"] is not None


async def test_a_stale_failure_changes_nothing(store):
    s, status = store
    job_id = await s.enqueue("jobs", {"job_type": "t"})
    await _claim(s, ["t"])
    answer = await s.fail("jobs", [{"id": job_id, "lease_token": str(uuid.uuid4()), "error": "x"}])
    assert answer == {"retried": [], "failed": [], "stale": [job_id]}
    assert (await status(job_id))["status"] == "processing"


async def test_release_hands_the_job_back_with_its_attempt_unspent(store):
    s, status = store
    job_id = await s.enqueue("jobs", {"job_type": "t"})
    [job] = await _claim(s, ["t"])
    assert await s.release("jobs", [_lease(job)]) == {"released": [job_id], "stale": []}
    row = await status(job_id)
    assert (row["status"], row["attempts"], row["lease_token"]) == ("pending", 0, None)
    assert [again["attempt"] for again in await _claim(s, ["t"])] == [1]


async def test_heartbeat_extends_current_leases_and_names_stale_ones(store):
    s, status = store
    ids = [await s.enqueue("jobs", {"job_type": "t"}) for _ in range(2)]
    jobs = await _claim(s, ["t"], lease=5)
    stale = {"id": ids[1], "lease_token": str(uuid.uuid4())}
    assert await s.heartbeat("jobs", [_lease(jobs[0]), stale], 600) == {
        "extended": [ids[0]],
        "stale": [ids[1]],
    }
    expires = (await status(ids[0]))["lease_expires_at"]
    assert (expires - datetime.now(UTC)).total_seconds() > 500


async def test_progress_is_written_only_under_the_current_lease(store):
    s, status = store
    job_id = await s.enqueue("jobs", {"job_type": "t"})
    [job] = await _claim(s, ["t"])
    assert await s.progress("jobs", job_id, job["lease_token"], 40, "half") is True
    assert await s.progress("jobs", job_id, str(uuid.uuid4()), 90, "no") is False
    row = await status(job_id)
    assert (row["progress"], row["progress_message"]) == (40, "half")
    with pytest.raises(Rejected, match="p_progress must be between 0 and 100"):
        await s.progress("jobs", job_id, job["lease_token"], 101, None)


async def test_a_tick_reaps_expired_leases_claims_and_says_when_the_next_job_falls_due(store):
    s, status = store
    spent = await s.enqueue("jobs", {"job_type": "t", "max_attempts": 1})
    again = await s.enqueue("jobs", {"job_type": "t"})
    await _claim(s, ["t"], lease=1)
    later = await s.enqueue(
        "jobs", {"job_type": "t", "run_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    )
    due = await s.enqueue("jobs", {"job_type": "t"})
    await anyio.sleep(1.1)  # the leases run out; nothing else can make them
    answer = await s.tick("jobs", "w2", ["t"], 5, 60, stats=False, probe=False, old_probe=None)
    assert answer["reaped"] == {"requeued": [again], "failed": [spent]}
    assert [job["id"] for job in answer["claimed"]] == [due]
    assert 0 <= answer["next_due_seconds"] <= 2.0  # the requeued job, backed off at most 2 s
    assert answer["stats"] is None and answer["probe"] is None
    assert (await status(spent))["last_error"] == (
        "lease expired: worker w1 stopped reporting during attempt 1 of 1; attempts exhausted"
    )
    assert (await status(later))["status"] == "pending"


async def test_a_tick_with_no_room_claims_nothing_and_can_bring_the_counts(store):
    s, _ = store
    await s.enqueue("jobs", {"job_type": "t"})
    answer = await s.tick("jobs", "w1", ["t"], 0, 60, stats=True, probe=False, old_probe=None)
    assert answer["claimed"] == []
    assert answer["stats"]["counts"] == {
        "pending": 1,
        "processing": 0,
        "waiting": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }


async def test_every_call_is_counted_by_function_and_outcome(store):
    s, _ = store
    await _claim(s, ["t"])
    with pytest.raises(Rejected):
        await s.claim("nope", "w1", ["t"], 1, 60)
    assert s.calls[("reactor_claim_jobs", "ok")] == 1
    assert s.calls[("reactor_claim_jobs", "rejected")] == 1


async def test_a_schedules_due_time_is_enqueued_once_however_often_it_is_sent(store):
    s, read = store
    declared = {
        "name": "every-second",
        "table": "jobs",
        "job_type": "t",
        "cron": "* * * * * *",
        "time_zone": "UTC",
        "payload": {"n": 1},
        "priority": 2,
        "max_attempts": 3,
        "catch_up_seconds": 60,
    }
    first = await s.fire_schedules("w1", {"jobs": ["t"]}, [declared], [])
    [listed] = first["schedules"]
    assert (listed["name"], listed["engine"], listed["last_run_at"]) == ("every-second", "worker", None)
    await anyio.sleep(1.1)
    at = datetime.fromisoformat(listed["fired_through"]).replace(microsecond=0) + timedelta(seconds=1)
    item = {"name": "every-second", "cron": "* * * * * *", "time_zone": "UTC", "times": [at.isoformat()]}
    fired = (await s.fire_schedules("w1", {"jobs": ["t"]}, [], [item]))["fired"]
    again = (
        await s.fire_schedules(
            "w2",
            {"jobs": ["t"]},
            [],
            [
                item,
            ],
        )
    )["fired"]
    [enqueued] = fired[0]["enqueued"]
    assert (fired[0]["current"], again[0]["enqueued"]) == (True, [])
    job = await read(enqueued["id"])
    assert (job["job_type"], job["status"], job["priority"], job["max_attempts"]) == ("t", "pending", 2, 3)
    assert job["run_at"] == at == datetime.fromisoformat(enqueued["at"])
    stale = {**item, "cron": "*/2 * * * * *"}
    assert (await s.fire_schedules("w1", {"jobs": ["t"]}, [], [stale]))["fired"][0]["current"] is False
    assert (await s.fire_schedules("w1", {"jobs": ["other"]}, [], []))["schedules"] == []


async def test_a_parent_spawns_waits_and_is_resumed_by_its_last_child_with_their_outcomes(store):
    s, status = store
    owner = str(uuid.uuid4())
    await s.enqueue("jobs", {"job_type": "parent", "user_id": owner, "priority": 3})
    [parent] = await _claim(s, ["parent"])
    assert (parent["resumed"], parent["parent_id"]) == (0, None)
    children = [{"job_type": "child", "key": "a", "payload": {"n": 1}}, {"job_type": "child", "key": "b"}]
    ids = (await s.spawn("jobs", parent["id"], parent["lease_token"], children))["ids"]
    assert (await s.spawn("jobs", parent["id"], parent["lease_token"], children[1:]))["ids"] == ids[1:]
    assert await s.spawn("jobs", parent["id"], str(uuid.uuid4()), children) == {"stale": True}
    assert await s.wait("jobs", [_lease(parent)]) == {"waiting": [parent["id"]], "resumed": [], "stale": []}
    assert (await status(parent["id"]))["status"] == "waiting"
    a, b = await _claim(s, ["child"])
    assert (a["parent_id"], a["priority"], str(a["user_id"]), a["payload"]) == (
        parent["id"],
        3,
        owner,
        {"n": 1},
    )
    assert "resumed" not in await s.complete("jobs", [{**_lease(a), "result": {"price": 9}}])
    failed = await s.fail("jobs", [{**_lease(b), "error": "sold out", "permanent": True}])
    assert failed["resumed"] == 1
    [again] = await _claim(s, ["parent"])
    assert (again["id"], again["resumed"], again["attempt"]) == (parent["id"], 1, 1)
    found = await s.children("jobs", parent["id"])
    assert [(c["id"], c["key"], c["status"], c["result"], c["last_error"]) for c in found] == [
        (ids[0], "a", "completed", {"price": 9}, None),
        (ids[1], "b", "failed", None, "sold out"),
    ]
    assert found[0]["completed_at"] is not None


async def test_a_wait_with_every_child_finished_resumes_at_once(store):
    s, status = store
    await s.enqueue("jobs", {"job_type": "parent"})
    [parent] = await _claim(s, ["parent"])
    await s.spawn("jobs", parent["id"], parent["lease_token"], [{"job_type": "child", "key": "a"}])
    [child] = await _claim(s, ["child"])
    await s.complete("jobs", [_lease(child)])
    assert await s.wait("jobs", [_lease(parent)]) == {"waiting": [], "resumed": [parent["id"]], "stale": []}
    row = await status(parent["id"])
    assert (row["status"], row["resumed"], row["attempts"]) == ("pending", 1, 0)


async def test_log_lines_are_written_only_under_the_lease(store):
    s, _ = store
    await s.enqueue("jobs", {"job_type": "t"})
    [job] = await _claim(s, ["t"])
    line = {**_lease(job), "level": "info", "message": "fetching"}
    assert await s.log("jobs", [line, {**line, "message": "parsing"}]) == {
        "written": 2,
        "dropped": 0,
        "stale": [],
    }
    await s.complete("jobs", [_lease(job)])
    assert await s.log("jobs", [line]) == {"written": 0, "dropped": 0, "stale": [job["id"]]}
