"""examples/account_enrichment: per-job log lines, progress, a retry with backoff, a 404 for good."""

from __future__ import annotations

import json
import signal

import asyncpg
import pytest

from examples.account_enrichment.fake_api import EnrichmentApi
from examples.fake_server import serving
from tests.support.examples import example_worker
from tests.support.worker import insert, status_is

pytestmark = pytest.mark.anyio


async def test_a_flaky_lookup_is_retried_and_every_step_is_logged_for_the_job(
    stack,
    db: asyncpg.Connection,
) -> None:
    api = EnrichmentApi()
    async with (
        serving(api.app()) as url,
        example_worker(
            stack, "account_enrichment", ENRICHMENT_API_URL=url, ENRICHMENT_RETRY_BASE_SECONDS="0.2"
        ) as worker,
    ):
        found = await insert(db, "account_enrichment", {"domain": "acme.test"})
        unknown = await insert(db, "account_enrichment", {"domain": "nowhere.test"})
        done = await status_is(db, found, "completed", "failed", timeout=30)
        refused = await status_is(db, unknown, "completed", "failed", timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert (done["status"], done["attempts"], done["progress"]) == ("completed", 2, 100), done["last_error"]
    assert json.loads(done["result"])["company"]["name"] == "Acme Ltd"
    logs = await db.fetch(
        "select attempt, level, message from public.job_logs where job_id = $1 order by id", found
    )
    lines = [(r["attempt"], r["level"], r["message"].split("\n")[0]) for r in logs]
    assert lines == [
        (1, "info", "attempt 1: enriching acme.test"),
        (1, "warning", "/companies/acme.test: the API answered 503; retrying with backoff"),
        (
            1,
            "error",
            f"HTTPStatusError: Server error '503 Service Unavailable' for url '{url}/companies/acme.test'",
        ),
        (2, "info", "attempt 2: enriching acme.test"),
        (2, "info", "enriched acme.test: Acme Ltd, 2 people"),
    ]  # the failed attempt's error, as the row recorded it, is a line too
    assert (refused["status"], refused["attempts"]) == ("failed", 1)
    assert refused["last_error"] == "PermanentError: /companies/nowhere.test: not known to the enrichment API"
