"""examples/coding_sessions: priority by plan, dead letter after 3 attempts, the session failed."""

from __future__ import annotations

import signal
import uuid

import asyncpg
import pytest

from tests.support.examples import apply_schema, example_worker, insert_as
from tests.support.worker import status_is

pytestmark = pytest.mark.anyio


OWNER = str(uuid.uuid4())


async def session(db: asyncpg.Connection, plan: str, owner: str = OWNER) -> str:
    return str(
        await db.fetchval(
            "insert into public.example_sessions (user_id, plan) values ($1, $2) returning id", owner, plan
        )
    )


async def test_sessions_run_by_plan_and_a_dead_job_fails_its_session(
    stack,
    db: asyncpg.Connection,
) -> None:
    await apply_schema(db, "coding_sessions")
    plans = ["free", "starter", "pro", "free", "pro"]
    sessions = [await session(db, plan) for plan in plans]
    jobs = [
        await insert_as(stack, OWNER, "coding_session", {"session_id": s, "task": "fix the tests"})
        for s in sessions
    ]
    async with example_worker(
        stack, "coding_sessions", REACTOR_CONCURRENCY="1", REACTOR_RETRY_BASE_SECONDS="0.1"
    ) as worker:
        done = [await status_is(db, job_id, "completed", "failed", timeout=30) for job_id in jobs]
        doomed = await session(db, "pro")
        dead_id = await insert_as(
            stack, OWNER, "coding_session", {"session_id": doomed, "task": "crash the sandbox"}
        )
        dead = await status_is(db, dead_id, "failed", timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert [d["priority"] for d in done] == [0, 5, 10, 0, 10]
    started = sorted(done, key=lambda d: d["started_at"])
    assert [d["priority"] for d in started] == [10, 10, 5, 0, 0]  # one at a time, plan first, then age
    assert [d["id"] for d in started] == [jobs[2], jobs[4], jobs[1], jobs[0], jobs[3]]
    statuses = await db.fetch("select id::text, status from public.example_sessions")
    assert {r["id"]: r["status"] for r in statuses if r["id"] in sessions} == dict.fromkeys(sessions, "done")
    assert (dead["attempts"], dead["last_error"]) == (3, "RuntimeError: the sandbox exited with status 137")
    failed = await db.fetchrow(
        "select status, error from public.example_sessions where id = $1::uuid", doomed
    )
    assert (failed["status"], failed["error"]) == (
        "failed",
        "RuntimeError: the sandbox exited with status 137",
    )


async def test_a_frontend_cannot_buy_priority_by_writing_the_column(stack, db: asyncpg.Connection) -> None:
    await apply_schema(db, "coding_sessions")
    free = await session(db, "free")
    job_id = await insert_as(stack, OWNER, "coding_session", {"session_id": free, "task": "x"}, priority=1000)
    assert await db.fetchval("select priority from public.jobs where id = $1", job_id) == 0


async def test_naming_someone_elses_session_buys_nothing_and_does_nothing(
    stack,
    db: asyncpg.Connection,
) -> None:
    await apply_schema(db, "coding_sessions")
    victims = await session(db, "pro", owner=str(uuid.uuid4()))
    intruder = str(uuid.uuid4())
    job_id = await insert_as(stack, intruder, "coding_session", {"session_id": victims, "task": "rm -rf"})
    assert await db.fetchval("select priority from public.jobs where id = $1", job_id) == 0
    async with example_worker(stack, "coding_sessions") as worker:
        failed = await status_is(db, job_id, "failed", timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert failed["last_error"] == f"PermanentError: session {victims} is not one of the job owner's sessions"
    assert (
        await db.fetchval("select status from public.example_sessions where id = $1::uuid", victims)
        == "queued"
    )
