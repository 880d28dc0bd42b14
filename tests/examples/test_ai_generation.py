"""examples/ai_generation: three job types, credits spent atomically, refused when short."""

from __future__ import annotations

import json
import signal
import uuid

import asyncpg
import pytest

from examples.ai_generation.fake_api import ChatApi
from examples.fake_server import serving
from tests.support.examples import apply_schema, example_worker, insert_as
from tests.support.worker import status_is

pytestmark = pytest.mark.anyio


async def test_jobs_spend_credits_once_and_a_user_who_cannot_pay_fails_without_an_api_call(
    stack,
    db: asyncpg.Connection,
) -> None:
    await apply_schema(db, "ai_generation")
    user = str(uuid.uuid4())
    await db.execute("insert into public.example_credits values ($1, 6)", user)
    chat = ChatApi()
    async with (
        serving(chat.app()) as url,
        example_worker(stack, "ai_generation", OPENAI_BASE_URL=f"{url}/v1") as worker,
    ):
        outcomes = {}
        for job_type, text in [
            ("ai_generation", "a haiku about queues"),
            ("sentiment_analysis", "Great service, slow delivery."),
            ("review_processing", "The product broke after a week."),
        ]:
            job_id = await insert_as(stack, user, job_type, {"text": text})
            outcomes[job_type] = await status_is(db, job_id, "completed", "failed", timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    generated = json.loads(outcomes["ai_generation"]["result"])
    assert generated["credits_charged"] == 5 and generated["balance"] == 1
    assert generated["output"].startswith("[gpt-4o-mini] write:")
    assert json.loads(outcomes["sentiment_analysis"]["result"])["balance"] == 0
    refused = outcomes["review_processing"]
    assert (refused["status"], refused["attempts"]) == ("failed", 1)
    assert f"insufficient credits: user {user} needs 2 credits, has 0" in refused["last_error"]
    assert len(chat.requests) == 2  # the unpaid job never reached the API
    assert await db.fetchval("select balance from public.example_credits where user_id = $1", user) == 0


async def test_the_owner_pays_whoever_the_payload_names(
    stack,
    db: asyncpg.Connection,
) -> None:
    await apply_schema(db, "ai_generation")
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await db.execute("insert into public.example_credits values ($1, 10), ($2, 10)", alice, bob)
    chat = ChatApi()
    async with (
        serving(chat.app()) as url,
        example_worker(stack, "ai_generation", OPENAI_BASE_URL=f"{url}/v1") as worker,
    ):
        job_id = await insert_as(stack, alice, "ai_generation", {"user_id": bob, "text": "bill bob"})
        done = await status_is(db, job_id, "completed", "failed", timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert done["status"] == "completed"
    balances = dict(await db.fetch("select user_id::text, balance from public.example_credits"))
    assert balances == {alice: 5, bob: 10}


async def test_a_job_charged_once_is_not_charged_again_when_retried(db: asyncpg.Connection) -> None:
    await apply_schema(db, "ai_generation")
    user = str(uuid.uuid4())
    await db.execute("insert into public.example_credits values ($1, 10)", user)
    for _ in range(2):
        assert await db.fetchval("select public.consume_credits($1, 4, 42)", user) == 6
