"""Hand-offs (sql/migrations/0007): an insert gives its job to a worker standing by."""

import asyncio
import datetime as dt
import json

import asyncpg
import pytest

from tests.support.contract import enqueue, leases, row, rpc, stand_by

pytestmark = pytest.mark.anyio


async def standby(db: asyncpg.Connection) -> dict[str, int]:
    return dict(await db.fetch("select worker, slots from reactor.standby order by worker"))


async def test_an_insert_due_now_goes_to_the_worker_standing_by_with_a_short_unconfirmed_lease(db):
    assert await stand_by(db, "w1", 10) == []
    assert await standby(db) == {"w1": 10}
    handed = await enqueue(db, "t", 3)
    other = await enqueue(db, "other")
    later = await enqueue(db, "t", run_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    for job_id in handed:
        job = await row(db, job_id)
        assert (job["status"], job["locked_by"], job["attempts"], job["started_at"]) == (
            "processing",
            "w1",
            1,
            None,
        )
        assert job["lease_token"] is not None
        lease = (job["lease_expires_at"] - job["created_at"]).total_seconds()
        assert 4.5 < lease < 6
    for job_id in other + later:
        assert (await row(db, job_id))["status"] == "pending"
    assert await standby(db) == {"w1": 7}
    done = await rpc(
        db, "reactor_complete", p_table="jobs", p_jobs=leases([await row(db, handed[0])], result=1)
    )
    assert done == {"completed": [handed[0]], "stale": []}


async def test_a_claim_offers_only_the_slots_it_left_free_and_slots_run_out(db):
    await enqueue(db, "t", 3)
    claimed = await stand_by(db, "w1", 5)
    assert len(claimed) == 3
    assert await standby(db) == {"w1": 2}
    ids = await enqueue(db, "t", 3)
    statuses = [(await row(db, i))["status"] for i in ids]
    assert statuses == ["processing", "processing", "pending"]
    assert await standby(db) == {"w1": 0}


async def test_hand_offs_spread_over_the_workers_with_most_free_slots(db):
    await stand_by(db, "w1", 3)
    await stand_by(db, "w2", 3)
    ids = await enqueue(db, "t", 4)
    owners = [(await row(db, i))["locked_by"] for i in ids]
    assert sorted(owners) == ["w1", "w1", "w2", "w2"]
    assert await standby(db) == {"w1": 1, "w2": 1}


async def test_a_lapsed_or_withdrawn_standby_takes_nothing(db):
    await stand_by(db, "w1", 3)
    await db.execute("update reactor.standby set expires_at = now() - interval '1 s'")
    [lapsed] = await enqueue(db, "t")
    assert (await row(db, lapsed))["status"] == "pending"
    await stand_by(db, "w1", 3)  # claims the pending job, offers the two slots left
    assert await standby(db) == {"w1": 2}
    await stand_by(db, "w1", 3, seconds=0)
    assert await standby(db) == {}
    await stand_by(db, "w2", 3)
    await db.execute("select public.reactor_stand_down('jobs', 'w2')")
    assert await standby(db) == {}
    [ignored] = await enqueue(db, "t")
    assert (await row(db, ignored))["status"] == "pending"


async def test_a_confirmed_hand_off_is_an_ordinary_lease(db):
    await stand_by(db, "w1", 5)
    [job_id] = await enqueue(db, "t")
    beat = await rpc(
        db, "reactor_heartbeat", p_table="jobs", p_leases=leases([await row(db, job_id)]), p_lease_seconds=60
    )
    assert beat == {"extended": [job_id], "stale": []}
    job = await row(db, job_id)
    assert (
        job["started_at"] is not None and (job["lease_expires_at"] - job["started_at"]).total_seconds() > 55
    )
    await db.execute("update public.jobs set lease_expires_at = now() - interval '1 s' where id = $1", job_id)
    assert await rpc(db, "reactor_reap", p_table="jobs") == {"requeued": [job_id], "failed": []}
    job = await row(db, job_id)
    assert job["attempts"] == 1 and job["run_at"] > job["updated_at"]  # backoff, the attempt spent
    assert "lease expired" in job["last_error"]


async def test_an_unconfirmed_hand_off_goes_back_at_once_with_its_attempt(db):
    await stand_by(db, "w1", 5)
    [job_id, last_try] = await enqueue(db, "t", 2, max_attempts=1)
    await db.execute("update public.jobs set lease_expires_at = now() - interval '1 s'")
    assert await rpc(db, "reactor_reap", p_table="jobs") == {"requeued": [job_id, last_try], "failed": []}
    for i in (job_id, last_try):
        job = await row(db, i)
        assert (job["status"], job["attempts"], job["last_error"], job["locked_by"]) == (
            "pending",
            0,
            None,
            None,
        )
        assert job["run_at"] <= job["updated_at"]
    claimed = await stand_by(db, "w2", 5)
    assert [(j["id"], j["attempt"]) for j in claimed] == [(job_id, 1), (last_try, 1)]


async def test_an_open_insert_holds_up_neither_a_claim_nor_another_insert(database_url, db):
    await stand_by(db, "w1", 5)
    holder = await asyncpg.connect(database_url)
    try:
        tx = holder.transaction()
        await tx.start()
        [held] = await enqueue(holder, "t")
        [other] = await asyncio.wait_for(enqueue(db, "t"), 5)
        assert (await row(db, other))["status"] == "pending"  # the standby row was busy: no hand-off
        claimed = await asyncio.wait_for(stand_by(db, "w1", 5), 5)
        assert [j["id"] for j in claimed] == [other]
        with pytest.raises(asyncpg.LockNotAvailableError):
            await db.execute("select public.reactor_stand_down('jobs', 'w1')")
        await tx.commit()
        assert (await row(db, held))["locked_by"] == "w1"
        assert await standby(db) == {"w1": 4}  # the claim left the busy row as it was
    finally:
        await holder.close()


async def test_a_table_created_later_hands_off_too(db):
    await db.execute("select reactor.create_job_table('later_jobs')")
    await stand_by(db, "w1", 2, table="later_jobs")
    [job_id] = await enqueue(db, "t", table="later_jobs")
    assert (await row(db, job_id, table="later_jobs"))["locked_by"] == "w1"
    [plain] = await enqueue(db, "t")
    assert (await row(db, plain))["status"] == "pending"


@pytest.mark.parametrize("seconds", [-1, 3601])
async def test_a_standby_out_of_range_is_refused_by_name(db, seconds):
    with pytest.raises(asyncpg.RaiseError, match="p_standby_seconds"):
        await stand_by(db, "w1", 2, seconds=seconds)
    assert await standby(db) == {}


async def test_a_claim_without_a_standby_leaves_it_and_a_tick_never_raises_it(db):
    await stand_by(db, "w1", 5)
    await enqueue(db, "t", 3)
    await stand_by(db, "w1", 5, seconds=None)
    assert await standby(db) == {"w1": 2}  # three handed off; the claim left the rest alone
    tick = "select public.reactor_tick('jobs', 'w1', array['t'], $1, p_standby_seconds => 30)"
    await db.execute(tick, 10)
    assert await standby(db) == {"w1": 2}
    await db.execute(tick, 1)
    assert await standby(db) == {"w1": 1}
    await db.execute("select public.reactor_tick('jobs', 'w2', array['t'], 10, p_standby_seconds => 30)")
    assert await standby(db) == {"w1": 1}  # a tick makes no standby either
    await db.execute(tick.replace("30", "0"), 10)
    assert await standby(db) == {}


async def test_the_tables_own_insert_triggers_run_before_the_hand_off(db):
    await db.execute("""
        create function public.schedule_later() returns trigger language plpgsql as $$
        begin new.run_at := now() + interval '1 hour'; return new; end $$;
        create trigger schedule_later before insert on public.jobs for each row execute function public.schedule_later();
    """)
    await stand_by(db, "w1", 5)
    [job_id] = await enqueue(db, "t")
    assert (await row(db, job_id))["status"] == "pending"  # scheduled by the table's trigger: not due
    assert await standby(db) == {"w1": 5}


async def renew(db: asyncpg.Connection, worker: str, slots: int, heard: int | None) -> list:
    """The worker's claim (reactor_claim_jobs) with its count of hand-offs heard."""
    claimed = await db.fetchval(
        "select public.reactor_claim_jobs('jobs', $1, array['t'], $2, 60, 30, $3)", worker, slots, heard
    )
    return json.loads(claimed)


async def handed(db: asyncpg.Connection) -> dict[str, int]:
    return dict(await db.fetch("select worker, handed from reactor.standby order by worker"))


async def test_a_renewal_leaves_out_the_hand_offs_the_worker_has_not_heard_of(db):
    assert await renew(db, "w1", 10, 0) == []
    await enqueue(db, "t", 3)
    assert (await standby(db), await handed(db)) == ({"w1": 7}, {"w1": 3})
    await renew(db, "w1", 10, 1)  # two of the three are still on their way
    assert (await standby(db), await handed(db)) == ({"w1": 8}, {"w1": 3})
    await renew(db, "w1", 10, 3)
    assert await standby(db) == {"w1": 10}
    await renew(db, "w1", 10, None)  # a worker of an earlier version: the offer as before
    assert (await standby(db), await handed(db)) == ({"w1": 10}, {"w1": 3})
    await renew(db, "w1", 10, 5)  # the worker heard of more: its count is taken up
    assert (await standby(db), await handed(db)) == ({"w1": 10}, {"w1": 5})


async def test_an_offer_counts_from_the_workers_own_count_when_it_is_made(db):
    await renew(db, "w1", 4, 40)
    await enqueue(db, "t")
    assert (await standby(db), await handed(db)) == ({"w1": 3}, {"w1": 41})
    await renew(db, "w1", 4, 40)
    assert await standby(db) == {"w1": 3}


async def test_a_hand_off_confirmed_or_lost_on_the_way_counts_no_more_as_on_its_way(db):
    await renew(db, "w1", 10, 0)
    confirmed, lost, _on_its_way = await enqueue(db, "t", 3)
    beat = await rpc(
        db,
        "reactor_heartbeat",
        p_table="jobs",
        p_leases=leases([await row(db, confirmed)]),
        p_lease_seconds=60,
    )
    assert beat == {"extended": [confirmed], "stale": []}
    await db.execute("update public.jobs set lease_expires_at = now() - interval '1 s' where id = $1", lost)
    await renew(db, "w1", 10, 0)  # the worker heard of none, yet only one can still reach it
    assert await standby(db) == {"w1": 9}


async def backend_waiting_on_a_lock(db: asyncpg.Connection, query: str) -> None:
    """Return once a backend running `query` waits for a lock (a safety net, not a timing assertion)."""
    for _ in range(500):
        if await db.fetchval(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like $1",
            f"%{query}%",
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no backend running {query!r} waited for a lock")


async def test_an_insert_waits_for_an_offer_a_renewing_claim_holds_and_takes_its_slot(database_url, db):
    """The wait is standby_lock_wait(), 10 ms; stretched here, so that the test sees the insert
    wait and lets the claim commit only then, on a machine of any speed."""
    await db.execute(
        "create or replace function reactor.standby_lock_wait() returns text language sql immutable as $$ select '60s' $$"
    )
    await renew(db, "w1", 5, 0)
    claimer, inserter = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        tx = claimer.transaction()
        await tx.start()
        await renew(claimer, "w1", 5, 0)  # holds the offer until it commits

        async def insert() -> tuple[int, str]:
            async with inserter.transaction():
                job_id = await inserter.fetchval(
                    "insert into public.jobs (job_type) values ('t') returning id"
                )
                return job_id, await inserter.fetchval("show lock_timeout")

        inserting = asyncio.ensure_future(insert())
        await backend_waiting_on_a_lock(db, "insert into public.jobs")
        assert not inserting.done()
        await tx.commit()
        job_id, lock_timeout = await asyncio.wait_for(inserting, 30)
        assert ((await row(db, job_id))["status"], (await row(db, job_id))["locked_by"]) == (
            "processing",
            "w1",
        )
        assert lock_timeout == "0"  # the inserting transaction's own setting is back
    finally:
        await claimer.close()
        await inserter.close()


async def test_an_insert_waits_no_longer_than_the_standby_lock_wait_for_a_held_offer(database_url, db):
    await renew(db, "w1", 5, 0)
    claimer = await asyncpg.connect(database_url)
    try:
        tx = claimer.transaction()
        await tx.start()
        await renew(claimer, "w1", 5, 0)
        [job_id] = await asyncio.wait_for(enqueue(db, "t"), 30)  # answered while the claim holds on
        job = await row(db, job_id)
        assert (job["status"], job["locked_by"]) == ("pending", "w1")  # w1 is its herald
        await tx.commit()
    finally:
        await claimer.close()


async def test_a_renewing_claim_waits_for_an_insert_taking_a_slot_of_its_offer(database_url, db):
    await db.execute(
        "create or replace function reactor.standby_lock_wait() returns text language sql immutable as $$ select '60s' $$"
    )
    await renew(db, "w1", 3, 0)
    inserter, claimer = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        tx = inserter.transaction()
        await tx.start()
        await enqueue(inserter, "t")  # holds the offer until it commits
        renewing = asyncio.ensure_future(renew(claimer, "w1", 5, 1))
        await backend_waiting_on_a_lock(db, "reactor_claim_jobs")
        assert not renewing.done()
        await tx.commit()
        assert await asyncio.wait_for(renewing, 30) == []
        assert await standby(db) == {"w1": 5}  # renewed, not left at the 2 the insert left
    finally:
        await inserter.close()
        await claimer.close()
