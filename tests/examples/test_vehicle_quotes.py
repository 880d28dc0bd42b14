"""examples/vehicle_quotes: a fan-out over child jobs under a fleet-wide 2 requests/s limit, with
partial failures combined by the parent."""

from __future__ import annotations

import json
import signal

import asyncpg
import pytest

from examples.fake_server import serving
from examples.vehicle_quotes.fake_api import QuoteApi
from tests.support.examples import example_worker
from tests.support.worker import insert, status_is

pytestmark = pytest.mark.anyio


async def test_quotes_fan_out_over_two_workers_within_the_rate_limit_and_count_partial_failures(
    stack,
    db: asyncpg.Connection,
) -> None:
    api = QuoteApi()
    async with (
        serving(api.app()) as url,
        example_worker(stack, "vehicle_quotes", QUOTE_API_URL=url) as one,
        example_worker(stack, "vehicle_quotes", QUOTE_API_URL=url) as two,
    ):
        payload = {"vehicle": "VW ID.3", "terms": [24, 36], "mileages": [10000, 20000, 150000]}
        job_id = await insert(db, "vehicle_quotes", payload)
        done = await status_is(db, job_id, "completed", "failed", timeout=60)
        for worker in (one, two):
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0
    result = json.loads(done["result"])
    assert (done["status"], done["progress"], done["progress_message"]) == ("completed", 100, "6 of 6 quotes")
    assert sorted((q["term"], q["mileage"]) for q in result["quotes"]) == [
        (24, 10000),
        (24, 20000),
        (36, 10000),
        (36, 20000),
    ]
    assert result["failed"] == 2
    assert result["failures"] == [
        {"quote": f"{term} months, 150000 km", "error": "PermanentError: no lease offers above 100000 km"}
        for term in (24, 36)
    ]
    assert len(api.accepted) == 6  # every combination asked once; a throttled one is asked again
    # Six children due at once on two workers: without the fleet-wide limit four would meet a 429.
    assert api.throttled < 4
