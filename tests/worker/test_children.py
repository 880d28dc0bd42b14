"""Child jobs and fan-in end to end: a worker runs a parent that spawns children, waits, and runs
again with their outcomes (sql/migrations/0015)."""

from __future__ import annotations

import json

import asyncpg
import pytest

from reactor import Job, PermanentError, Reactor, WaitForChildren
from reactor.retry import RetryPolicy
from tests.support.worker import NO_POLLING, insert, row, running, status_is, subscribed, worker_config

pytestmark = pytest.mark.anyio


async def test_a_parent_combines_its_childrens_results_and_failures_once_they_have_all_finished(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    runs: list[int] = []

    @app.handler("quote_all")
    async def quote_all(job: Job) -> dict:
        runs.append(job.resumed)
        if not job.resumed:
            await job.spawn_all({"job_type": "quote", "payload": {"term": t}} for t in job.payload["terms"])
            raise WaitForChildren()
        children = await job.children()
        return {
            "quotes": {c.result["term"]: c.result["price"] for c in children if c.status == "completed"},
            "failed": [c.error for c in children if c.status == "failed"],
        }

    @app.handler("quote")
    async def quote(job: Job) -> dict:
        if job.payload["term"] == 60:
            raise PermanentError("no offer for 60 months")
        return {"term": job.payload["term"], "price": 100 * job.payload["term"]}

    # No sweeps: the children start from their inserts' events and the parent from the report of
    # its last child, or not within the test.
    async with running(app, worker_config(stack, **NO_POLLING)):
        await subscribed(app)
        parent = await insert(db, "quote_all", {"terms": [24, 36, 60]})
        done = await status_is(db, parent, "completed")
    assert json.loads(done["result"]) == {
        "quotes": {"24": 2400, "36": 3600},
        "failed": ["PermanentError: no offer for 60 months"],
    }
    assert runs == [0, 1]
    assert (done["resumed"], done["attempts"]) == (1, 1)  # waiting gave its attempt back
    children = await db.fetch(
        "select status, user_id, child_key from public.jobs where parent_id = $1", parent
    )
    assert sorted(c["child_key"] for c in children) == ["0.0", "0.1", "0.2"]


async def test_a_parent_that_crashed_while_spawning_spawns_nothing_twice(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()

    @app.handler("fan_out", retry=RetryPolicy(base_seconds=0.01, cap_seconds=0.01))
    async def fan_out(job: Job) -> int:
        if job.resumed:
            return len(await job.children())
        for n in range(3):
            await job.spawn("leaf", {"n": n})
            if job.attempt == 1 and n == 1:
                raise ConnectionError("the worker's host went away")
        raise WaitForChildren()

    @app.handler("leaf")
    async def leaf(job: Job) -> int:
        return job.payload["n"]

    async with running(app, worker_config(stack)):
        parent = await insert(db, "fan_out")
        done = await status_is(db, parent, "completed")
    assert json.loads(done["result"]) == 3
    assert done["attempts"] == 2
    leaves = await db.fetch("select payload from public.jobs where parent_id = $1 order by id", parent)
    assert [json.loads(r["payload"]) for r in leaves] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_waiting_without_a_child_fails_the_attempt_and_says_why(stack, db: asyncpg.Connection) -> None:
    app = Reactor()

    @app.handler("lonely", max_attempts=1)
    async def lonely(job: Job) -> None:
        raise WaitForChildren()

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "lonely")
        failed = await status_is(db, job_id, "failed")
    assert failed["last_error"] == "WaitForChildren: the handler waited without spawning a child in this run"
    assert (await row(db, job_id))["resumed"] == 0
