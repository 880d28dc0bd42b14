"""Vehicle quotes: one job asks a quote API for every term x mileage of one vehicle.

The quote API allows 2 requests a second, so the handler paces itself under that and waits out
any 429 it still gets. A combination the API refuses for good is counted, not retried: one bad
mileage must not sink the other quotes. Progress is written after every quote, so the frontend's
bar moves as the job goes.

    insert into jobs (job_type, payload) values ('vehicle_quotes',
      '{"vehicle": "VW ID.3", "terms": [24, 36], "mileages": [10000, 20000]}');
"""

from __future__ import annotations

import os
import time

import anyio
import httpx

from reactor import Job, PermanentError, Reactor

QUOTE_API_URL = os.environ.get("QUOTE_API_URL", "http://127.0.0.1:8701")
REQUESTS_PER_SECOND = 2.0

app = Reactor()


class Pacer:
    """Spaces calls at least 1/rate seconds apart, across everything that shares it."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = anyio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            await anyio.sleep(max(0.0, self._next - now))
            self._next = max(now, self._next) + self._interval


pacer = Pacer(REQUESTS_PER_SECOND)  # one per worker process: the API's limit is per key, not per job


async def quote(client: httpx.AsyncClient, vehicle: str, term: int, mileage: int) -> dict:
    """One quote; raises PermanentError when the API refuses this combination."""
    while True:
        await pacer.wait()
        response = await client.post("/quote", json={"vehicle": vehicle, "term": term, "mileage": mileage})
        if response.status_code == 429:
            await anyio.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        if 400 <= response.status_code < 500:
            raise PermanentError(response.json().get("error", response.text))
        response.raise_for_status()  # a 5xx fails the attempt; the job is retried with backoff
        return response.json()


@app.handler("vehicle_quotes", timeout=600)
async def vehicle_quotes(job: Job) -> dict:
    vehicle = job.payload["vehicle"]
    combos = [(t, m) for t in job.payload["terms"] for m in job.payload["mileages"]]
    quotes, failures = [], []
    async with httpx.AsyncClient(base_url=QUOTE_API_URL, timeout=30) as client:
        for done, (term, mileage) in enumerate(combos, 1):
            try:
                quotes.append(await quote(client, vehicle, term, mileage))
            except PermanentError as exc:
                failures.append({"term": term, "mileage": mileage, "error": str(exc)})
                job.logger.warning(f"no quote for {term} months, {mileage} km: {exc}")
            await job.set_progress(round(100 * done / len(combos)), f"{done} of {len(combos)} quotes")
    return {"vehicle": vehicle, "quotes": quotes, "failed": len(failures), "failures": failures}
