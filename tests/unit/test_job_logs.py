"""A job's log lines on the in-memory store: sent as written, batched while a send is in flight,
refused once the lease is gone, capped per job."""

from __future__ import annotations

import anyio
import pytest

from reactor.job import Job
from reactor.job_logs import MAX_LOG_LINES, JobLog
from reactor.memory import MemoryStore
from reactor.redact import Redactor

pytestmark = pytest.mark.anyio


async def running_job(store: MemoryStore) -> Job:
    await store.enqueue("jobs", {"job_type": "t", "user_id": "u-1"})
    [row] = await store.claim("jobs", "w1", ["t"], 1, 60)
    job = Job(row["id"], "jobs", "t", {}, row["attempt"], 5, row["lease_token"])
    job._log = JobLog(store, Redactor(["s3cret"]), job)
    return job


def sends(store: MemoryStore) -> int:
    return store.calls[("reactor_log", "ok")]


async def test_lines_are_stored_in_order_redacted_and_with_the_owner() -> None:
    store = MemoryStore()
    job = await running_job(store)
    assert await job.log("one")
    assert await job.log("key s3cret leaked", level="error")
    assert [(g["level"], g["message"], g["user_id"]) for g in store.logs] == [
        ("info", "one", "u-1"),
        ("error", "key [REDACTED] leaked", "u-1"),
    ]
    assert sends(store) == 2


class AnsweringLater(MemoryStore):
    """The in-memory store, letting other tasks run while a send is in flight, as a request does."""

    async def log(self, table, lines):
        await anyio.sleep(0)
        return await super().log(table, lines)


async def test_lines_written_while_a_send_is_in_flight_go_together_in_the_next() -> None:
    store = AnsweringLater()
    job = await running_job(store)
    async with anyio.create_task_group() as group:
        for n in range(10):
            group.start_soon(job.log, f"line {n}")
    assert [g["message"] for g in store.logs] == [f"line {n}" for n in range(10)]
    assert sends(store) == 2  # the first line alone, then the nine written while it was sent


async def test_a_job_whose_lease_is_gone_is_told_and_its_lines_are_not_stored() -> None:
    store = MemoryStore()
    job = await running_job(store)
    await store.complete("jobs", [{"id": job.id, "lease_token": job.lease_token}])
    assert await job.log("after the end") is False
    assert await job.log("and again") is False
    assert store.logs == [] and sends(store) == 1


async def test_lines_beyond_the_cap_are_dropped_and_a_bad_level_is_refused() -> None:
    store = MemoryStore()
    job = await running_job(store)
    for n in range(MAX_LOG_LINES + 5):
        assert await job.log(str(n))
    assert len(store.logs) == MAX_LOG_LINES
    with pytest.raises(ValueError, match="a log level is one of debug, info, warning, error, not 'fatal'"):
        await job.log("x", level="fatal")
