"""The worker on the local stack's hosted profile (docs/hosted-supabase.md): where hosted Supabase
would make it lose or spend jobs, it does not."""

from __future__ import annotations

import asyncpg
import pytest

from reactor.devstack.profile import Profile
from reactor.devstack.stack import serve
from reactor.store import Store

pytestmark = pytest.mark.anyio


async def test_a_claim_past_max_rows_reaches_the_worker_whole(
    database_url: str, db: asyncpg.Connection
) -> None:
    """PostgREST cuts reactor_claim's rows at Max rows after it leased them all; the worker's claim
    (reactor_claim_batch, one JSON array) is not cut, so no job is leased and left unseen."""
    await db.execute("insert into public.jobs (job_type) select 'cut' from generate_series(1, 5)")
    async with serve(
        database_url, port=0, profile=Profile.hosted("free", max_rows=2, round_trip_ms=0.0)
    ) as stack:
        store = Store(stack.url, stack.keys.service_role)
        try:
            claimed = await store.claim("jobs", "w1", ["cut"], 5, 60)
        finally:
            await store.aclose()
    assert len(claimed) == 5
    leased = await db.fetch(
        "select id, lease_token::text from public.jobs where job_type = 'cut' and status = 'processing'"
    )
    assert {(job["id"], job["lease_token"]) for job in claimed} == {
        (r["id"], r["lease_token"]) for r in leased
    }
