"""Hand-offs end to end: a worker standing by starts inserted jobs from their Realtime event alone,
and a hand-off nobody takes up still runs (sql/migrations/0007)."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from reactor import Job, Reactor
from tests.support.worker import (
    NO_POLLING,
    claims,
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


async def standby(db: asyncpg.Connection) -> dict[str, int]:
    return dict(await db.fetch("select worker, slots from reactor.standby order by worker"))


async def test_a_worker_standing_by_starts_inserted_jobs_without_claiming_them(stack, db) -> None:
    app = echo_app()
    config = worker_config(stack, **NO_POLLING)
    async with running(app, config):
        await subscribed(app)
        await wait_until(lambda: standby(db))
        assert await standby(db) == {config.worker_id: 10}  # concurrency 10, all free
        for n in range(5):
            job_id = await insert(db, "echo", {"n": n})
            done = await status_is(db, job_id, "completed")
            assert (done["locked_by"], done["attempts"], done["result"]) == (
                config.worker_id,
                1,
                f'{{"n": {n}}}',
            )
            assert done["started_at"] is not None  # confirmed before the outcome was written
        assert app.metrics.events["hand_offs"] == 5  # each started from its announcement: no claim
        # Half the offer taken with every slot free again: a claim renewed it before it ran out.
        await wait_until(lambda: db.fetchval("select slots > 5 from reactor.standby"))
    assert await standby(db) == {}  # withdrawn at shutdown


async def test_a_claim_after_the_slots_ran_out_offers_them_again(stack, db) -> None:
    app = echo_app()
    config = worker_config(stack, **NO_POLLING, concurrency=2)
    async with running(app, config):
        await subscribed(app)
        await wait_until(lambda: standby(db))
        before = claims(app)
        ids = [await insert(db, "echo", {"n": n}) for n in range(3)]
        for job_id in ids:
            await status_is(db, job_id, "completed")
        assert claims(app) > before  # the third job was pending: its event brought a claim
        offered = await wait_until(lambda: standby(db))  # the claim for the third job offered slots again
        assert offered[config.worker_id] >= 1


async def _equal(value, expected) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value


async def test_a_job_handed_to_a_worker_that_never_hears_of_it_runs_after_its_lease_unspent(
    stack, db
) -> None:
    """No other worker hears a hand-off (each hears only what names it), so the next tick after the
    5 s hand-off lease reaps it, gives the attempt back and claims it."""
    app = echo_app()
    ticks = {"poll_fast_seconds": 2.0, "poll_slow_seconds": 2.0}
    async with running(app, worker_config(stack, **{**NO_POLLING, **ticks})):
        await subscribed(app)
        await wait_until(lambda: standby(db))
        await db.execute(
            "insert into reactor.standby values ('jobs', 'gone', array['echo'], 100, now() + interval '1 hour')"
        )
        job_id = await insert(db, "echo", {"lost": True})
        handed = await row(db, job_id)
        assert (handed["status"], handed["locked_by"]) == ("processing", "gone")
        done = await status_is(db, job_id, "completed")
        assert done["locked_by"] != "gone" and done["attempts"] == 1  # the lost hand-off cost no attempt
        assert (done["started_at"] - handed["lease_expires_at"]).total_seconds() >= 0


async def test_with_hand_offs_off_a_worker_never_stands_by(stack, db) -> None:
    app = echo_app()
    async with running(app, worker_config(stack, **NO_POLLING, hand_off=False)):
        await subscribed(app)
        before = claims(app)
        job_id = await insert(db, "echo", {})
        await status_is(db, job_id, "completed")
        assert claims(app) > before  # it was claimed
        assert await standby(db) == {}


async def test_a_worker_whose_realtime_is_down_withdraws_its_standby(stack, db) -> None:
    app = echo_app()
    async with running(app, worker_config(stack, **{**NO_POLLING, "poll_fast_seconds": 0.2})):
        await subscribed(app)
        await wait_until(lambda: standby(db))
        stack.faults.refuse_websockets(600)
        await stack.realtime.close_sockets(1006)
        await wait_until(lambda: _equal(standby(db), {}))
        # The status as the insert wrote it: a sweep may claim the job the moment it commits.
        job_id, status = await db.fetchrow(
            "insert into public.jobs (job_type, payload) values ('echo', '{}') returning id, status"
        )
        assert status == "pending"
        await status_is(db, job_id, "completed")
        stack.faults.clear()


async def test_a_hand_off_confirmed_through_an_api_outage_still_reports_its_outcome(stack, db) -> None:
    app = Reactor()
    started = anyio.Event()

    @app.handler("slow")
    async def slow(job: Job) -> str:
        started.set()
        await anyio.sleep(1.0)
        return "done"

    async with running(app, worker_config(stack, **NO_POLLING)):
        await subscribed(app)
        await wait_until(lambda: standby(db))
        stack.faults.fail_rest(503, 2.0)
        job_id = await insert(db, "slow", {})
        with anyio.fail_after(10):
            await started.wait()
        done = await status_is(db, job_id, "completed", timeout=30)
        assert done["result"] == '"done"' and done["attempts"] == 1 and done["started_at"] is not None


async def test_a_hand_off_beyond_the_concurrency_is_handed_back_and_runs_when_a_slot_frees(stack, db) -> None:
    app = Reactor()
    now_running, most = 0, 0
    release = anyio.Event()

    @app.handler("one")
    async def one(job: Job) -> None:
        nonlocal now_running, most
        now_running += 1
        most = max(most, now_running)
        await release.wait()
        now_running -= 1

    config = worker_config(stack, **NO_POLLING, concurrency=1)
    async with running(app, config):
        await subscribed(app)
        await wait_until(lambda: standby(db))
        first = await insert(db, "one", {})
        await wait_until(lambda: _true(now_running == 1))
        # The race: a standby offered by a claim for the slot the first job now holds.
        await db.execute("update reactor.standby set slots = 1")
        second = await insert(db, "one", {})
        await status_is(db, second, "pending")  # handed back: no slot was free
        release.set()
        for job_id in (first, second):
            done = await status_is(db, job_id, "completed")
            assert done["attempts"] == 1
    assert most == 1


async def test_a_worker_stands_by_only_once_its_feed_is_live(stack, db) -> None:
    """Between SUBSCRIBED and "Replication connection established" Realtime delivers no broadcasts
    from the database, so a job handed over then would wait out its lease: the worker claims, but
    offers no slots yet."""
    stack.faults.take_replication_down(60)
    app = echo_app()
    async with running(app, worker_config(stack, **NO_POLLING)):
        await wait_until(lambda: _true(app.worker.listener is not None and app.worker.listener.healthy()))
        await wait_until(lambda: _true(claims(app) >= 1))
        assert app.metrics.events["realtime_live"] == 0
        assert await standby(db) == {}
        stack.faults.clear()
        await subscribed(app)
        await wait_until(lambda: standby(db))
