"""Helpers for the examples: each runs as a real `reactor run examples.<name>.worker:app`
against the local stack, with its outside services played by its own fake_api on localhost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from supabase import acreate_client

from tests.support.worker import WorkerProcess, worker_env, worker_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def apply_schema(db: asyncpg.Connection, example: str) -> None:
    await db.execute((EXAMPLES / example / "schema.sql").read_text())


async def insert_as(stack, user_id: str, job_type: str, payload: Any, **columns: Any) -> int:
    """Insert a job as the signed-in user `user_id` does from a frontend, with supabase-py."""
    client = await acreate_client(stack.url, stack.keys.anon)
    client.postgrest.auth(stack.keys.user_token(user_id))
    row = {"job_type": job_type, "payload": payload, **columns}
    return (await client.table("jobs").insert(row).select("id").execute()).data[0]["id"]


@asynccontextmanager
async def example_worker(stack, example: str, **variables: str) -> AsyncIterator[WorkerProcess]:
    env = worker_env(stack, **variables)
    async with worker_process(env, app=f"examples.{example}.worker:app") as worker:
        yield worker
