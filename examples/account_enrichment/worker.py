"""Account enrichment: look a company up in an enrichment API and keep a log of every step.

Each step writes a line with `job.log` to `public.job_logs`, which the job's owner reads under RLS
and watches over Realtime, so a support page can show what happened on every attempt. A 5xx or
429 from the API fails the attempt and reactor retries it with exponential backoff and full
jitter; a 404 is permanent.

    insert into jobs (job_type, payload) values ('account_enrichment', '{"domain": "acme.test"}');
"""

from __future__ import annotations

import os

import httpx

from reactor import Job, PermanentError, Reactor
from reactor.retry import RetryPolicy

ENRICHMENT_API_URL = os.environ.get("ENRICHMENT_API_URL", "http://127.0.0.1:8704")
RETRY = RetryPolicy(base_seconds=float(os.environ.get("ENRICHMENT_RETRY_BASE_SECONDS", "5")), cap_seconds=600)

app = Reactor()


async def fetch(client: httpx.AsyncClient, job: Job, path: str) -> dict:
    response = await client.get(path)
    if response.status_code == 404:
        await job.log(f"{path}: not known to the enrichment API", level="error")
        raise PermanentError(f"{path}: not known to the enrichment API")
    if response.status_code >= 500 or response.status_code == 429:
        await job.log(
            f"{path}: the API answered {response.status_code}; retrying with backoff", level="warning"
        )
    response.raise_for_status()
    return response.json()


@app.handler("account_enrichment", timeout=60, max_attempts=5, retry=RETRY)
async def account_enrichment(job: Job) -> dict:
    domain = job.payload["domain"]
    await job.log(f"attempt {job.attempt}: enriching {domain}")
    async with httpx.AsyncClient(base_url=ENRICHMENT_API_URL, timeout=30) as client:
        await job.set_progress(10, "looking up the company")
        company = await fetch(client, job, f"/companies/{domain}")
        await job.set_progress(60, "looking up its people")
        people = await fetch(client, job, f"/companies/{domain}/people")
    await job.log(f"enriched {domain}: {company['name']}, {len(people['people'])} people")
    await job.set_progress(100, "enriched")
    return {"company": company, "people": people["people"]}
