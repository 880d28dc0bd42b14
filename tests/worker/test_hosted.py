"""The worker on the local stack's hosted profile (docs/hosted-supabase.md): where hosted Supabase
would make it lose or spend jobs, it does not."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from reactor.devstack.profile import Profile
from reactor.devstack.stack import serve
from reactor.store import Store
from tests.support.worker import (
    NO_POLLING,
    echo_app,
    insert,
    row,
    running,
    status_is,
    subscribed,
    wait_until,
    worker_config,
)

pytestmark = pytest.mark.anyio


async def test_a_claim_past_max_rows_reaches_the_worker_whole(
    database_url: str, db: asyncpg.Connection
) -> None:
    """PostgREST cuts reactor_claim's rows at Max rows after it leased them all; the worker's claim
    (reactor_claim_jobs, one JSON array) is not cut, so no job is leased and left unseen."""
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


async def test_on_a_project_that_allows_private_channels_only_jobs_are_still_handed_off_over_realtime(
    database_url: str, db: asyncpg.Connection
) -> None:
    """Every channel the worker joins is private, which the service key may join: a project set to
    refuse public channels changes nothing, and the hand-off arrives streamed, not polled."""
    profile = Profile.hosted("free", private_only=True, round_trip_ms=0.0)
    async with serve(database_url, port=0, profile=profile) as stack:
        app = echo_app()
        config = worker_config(stack, **NO_POLLING)
        async with running(app, config):
            await subscribed(app)
            await wait_until(lambda: db.fetchval("select count(*) > 0 from reactor.standby"))
            job_id = await insert(db, "echo", {"n": 1})
            done = await status_is(db, job_id, "completed")
            assert (done["locked_by"], done["attempts"]) == (config.worker_id, 1)
            assert app.metrics.events["hand_offs"] == 1  # started from the announcement alone
        assert stack.realtime.counters.broadcasts >= 1 and stack.realtime.counters.delivered == 0


async def test_a_hand_off_whose_message_the_dropped_socket_lost_is_replayed_and_started(
    database_url: str, db: asyncpg.Connection
) -> None:
    """An insert hands the worker a job while its socket is already failing (its message is not
    delivered), then the socket drops. On rejoining the worker asks for what it missed and starts
    the job within the hand-off's 5 s lease."""
    async with serve(database_url, port=0, profile=Profile.hosted("free", round_trip_ms=0.0)) as stack:
        app = echo_app()
        config = worker_config(stack, **NO_POLLING)
        async with running(app, config):
            await subscribed(app)
            await wait_until(lambda: db.fetchval("select count(*) > 0 from reactor.standby"))
            stack.faults.go_silent(60)
            job_id = await insert(db, "echo", {"n": 2})
            assert (await row(db, job_id))["status"] == "processing"  # handed to the worker
            await stack.realtime.close_sockets(1006)
            stack.faults.clear()
            done = await status_is(db, job_id, "completed")
            assert (done["locked_by"], done["attempts"]) == (config.worker_id, 1)
            assert app.metrics.events["realtime_subscriptions"] >= 2
            # Started from the hand-off itself: a lapsed one goes back to pending only once its
            # 5 s lease has run out, and only a claim after that could start it.
            assert done["started_at"] < done["created_at"] + timedelta(seconds=5)


async def test_far_from_its_project_a_worker_still_stands_by_once_realtime_is_up(
    database_url: str, db: asyncpg.Connection
) -> None:
    """600 ms from the project the claim that going live asks for is still in flight when the
    subscription is confirmed, which asks for a claim and a tick at once; the two are one tick,
    and a tick only renews a standby. The worker stands by all the same, and an insert is handed
    to it."""
    profile = Profile.hosted("free", round_trip_ms=600.0)
    async with serve(database_url, port=0, profile=profile) as stack:
        app = echo_app()
        config = worker_config(stack, **{**NO_POLLING, "poll_fast_seconds": 0.2})
        async with running(app, config):
            await subscribed(app)
            await wait_until(lambda: db.fetchval("select count(*) > 0 from reactor.standby"))
            job_id = await insert(db, "echo", {"n": 3})
            assert (await row(db, job_id))["locked_by"] == config.worker_id  # handed off on insert
            await status_is(db, job_id, "completed")
