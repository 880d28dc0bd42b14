"""Job logs end to end: a handler's `job.log` lines reach its owner over Realtime, in order and
redacted, and nobody else's subscription (sql/migrations/0016)."""

from __future__ import annotations

import uuid

import anyio
import asyncpg
import pytest

from reactor import Job, Reactor
from tests.support.realtime import client, subscribe
from tests.support.worker import insert, running, status_is, worker_config

pytestmark = pytest.mark.anyio


async def test_the_owner_watches_a_jobs_lines_arrive_redacted_and_in_order(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()
    watching = anyio.Event()
    key = stack.keys.service_role

    @app.handler("import")
    async def import_rows(job: Job) -> None:
        await watching.wait()
        assert await job.log("fetching the file")
        assert await job.log(f"GET https://example.com/file?apikey={key} failed", level="warning")
        assert await job.log("retrying through the mirror\x00")

    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    owner = await client(stack.url, stack.keys.anon, user_token=stack.keys.user_token(alice))
    stranger = await client(stack.url, stack.keys.anon, user_token=stack.keys.user_token(bob))
    try:
        async with running(app, worker_config(stack)):
            job_id = await insert(db, "import", user_id=uuid.UUID(alice))
            binding = {
                "event": "INSERT",
                "table": "job_logs",
                "schema": "public",
                "filter": f"job_id=eq.{job_id}",
            }
            theirs = await subscribe(stranger, "theirs", binding)
            mine = await subscribe(owner, "mine", binding)
            watching.set()
            await status_is(db, job_id, "completed")
            seen = [(await mine.next_change())["data"]["record"] for _ in range(3)]
            # The stranger's channel gets a later line of its own user first: none of alice's came.
            await insert(db, "marker", user_id=uuid.UUID(bob))
            await db.execute(
                "insert into public.job_logs (job_table, job_id, user_id, attempt, level, message)"
                " values ('jobs', $1, $2, 1, 'info', 'marker')",
                job_id,
                uuid.UUID(bob),
            )
            assert (await theirs.next_change())["data"]["record"]["message"] == "marker"
    finally:
        await owner.realtime.close()
        await stranger.realtime.close()
    assert [(r["level"], r["message"], r["attempt"], r["user_id"]) for r in seen] == [
        ("info", "fetching the file", 1, alice),
        ("warning", "GET https://example.com/file?apikey=[REDACTED] failed", 1, alice),
        ("info", "retrying through the mirror\ufffd", 1, alice),
    ]
