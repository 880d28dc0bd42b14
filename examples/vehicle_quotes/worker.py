"""Vehicle quotes: one job asks a quote API for every term x mileage of one vehicle.

The job fans out: it spawns one `vehicle_quote` child per combination and waits; each child is an
ordinary job, retried on its own, run by whichever worker of the fleet is free. The quote API
allows 2 requests a second per key, so the child's handler declares `rate="3/2s"`, a limit the
database holds across every worker (three replicas still send 1.5 a second: a margin, since a
request leaves a round trip after its start is counted), and snoozes through
any 429 it still gets. A combination the API refuses for good fails its child, not the job: once
every child has finished, the job runs again and combines the quotes with the failures.

    insert into jobs (job_type, payload) values ('vehicle_quotes',
      '{"vehicle": "VW ID.3", "terms": [24, 36], "mileages": [10000, 20000]}');

The frontend watches the job's row for the combined result, and its children's rows
(`parent_id=eq.<job id>`) for each quote as it lands.
"""

from __future__ import annotations

import os

import httpx

from reactor import Job, PermanentError, Reactor, Snooze, WaitForChildren

QUOTE_API_URL = os.environ.get("QUOTE_API_URL", "http://127.0.0.1:8701")

app = Reactor()


@app.handler("vehicle_quotes")
async def vehicle_quotes(job: Job) -> dict:
    vehicle = job.payload["vehicle"]
    if not job.resumed:
        await job.spawn_all(
            {
                "job_type": "vehicle_quote",
                "key": f"{term} months, {mileage} km",
                "payload": {"vehicle": vehicle, "term": term, "mileage": mileage},
            }
            for term in job.payload["terms"]
            for mileage in job.payload["mileages"]
        )
        raise WaitForChildren()
    children = await job.children()
    quotes = [c.result for c in children if c.status == "completed"]
    failures = [{"quote": c.key, "error": c.error} for c in children if c.status != "completed"]
    await job.set_progress(100, f"{len(children)} of {len(children)} quotes")
    return {"vehicle": vehicle, "quotes": quotes, "failed": len(failures), "failures": failures}


@app.handler("vehicle_quote", rate="3/2s", timeout=60)
async def vehicle_quote(job: Job) -> dict:
    """One quote; fails for good when the API refuses this combination."""
    async with httpx.AsyncClient(base_url=QUOTE_API_URL, timeout=30) as client:
        response = await client.post("/quote", json=job.payload)
    if response.status_code == 429:
        raise Snooze(float(response.headers.get("Retry-After", "1")))
    if 400 <= response.status_code < 500:
        raise PermanentError(response.json().get("error", response.text))
    response.raise_for_status()  # a 5xx fails the attempt; the child is retried with backoff
    return response.json()
