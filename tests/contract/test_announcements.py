"""One Realtime message per job (sql/migrations/0010): an insert names at most one worker in
`locked_by`, the only worker whose subscription hears it, and none once reactor's Realtime budget
for the second is spent."""

import datetime as dt
import json
import uuid

import asyncpg
import pytest

from tests.support.contract import enqueue, row, rpc, stand_by

pytestmark = pytest.mark.anyio


async def withheld_in_all(db: asyncpg.Connection) -> int:
    """The inserts withheld in all, as a worker's tick reports them."""
    answer = await db.fetchval("select public.reactor_tick('jobs', 'w1', array['t'], 0)")
    return json.loads(answer)["withheld"]


async def named(db: asyncpg.Connection, ids: list[int]) -> list[tuple[str, str | None]]:
    return [(r["status"], r["locked_by"]) for r in [await row(db, i) for i in ids]]


async def test_a_job_no_worker_can_take_names_the_standby_with_most_slots_as_its_herald(db):
    await stand_by(db, "w1", 1)
    await enqueue(db, "t")  # takes w1's only slot
    await stand_by(db, "w2", 2, types=("t", "u"))
    await enqueue(db, "t", 2)  # takes both of w2's
    pending = await enqueue(db, "t")
    assert await named(db, pending) == [("pending", "w2")]  # w1 and w2 have no slot: the later offer
    later = await enqueue(db, "u", run_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert await named(db, later) == [("pending", "w2")]  # a scheduled job: its herald sets a timer
    nobody = await enqueue(db, "v")
    assert await named(db, nobody) == [("pending", None)]  # no worker stands by for its type


async def test_a_claim_takes_a_heralded_job_like_any_other(db):
    await stand_by(db, "w1", 1)
    await enqueue(db, "t")
    [job_id] = await enqueue(db, "t")
    assert await named(db, [job_id]) == [("pending", "w1")]
    [claimed] = await db.fetch("select * from public.reactor_claim('jobs', 'w9', array['t'], 1)")
    assert claimed["id"] == job_id
    assert await named(db, [job_id]) == [("processing", "w9")]


async def test_past_the_budget_the_first_insert_names_a_herald_and_the_rest_nobody(db):
    await stand_by(db, "w1", 16)
    await db.execute("update reactor.realtime_budget set messages_per_second = 0")
    ids = await enqueue(db, "t", 5)  # one statement: within a second, or across one turn at most
    rows = await named(db, ids)
    # Not handed off though w1 has slots: its one claim sweeps the four withheld after it.
    assert rows[0] == ("pending", "w1")
    assert rows[2:] == [("pending", None)] * 3
    withheld = rows.count(("pending", None))
    assert (await withheld_in_all(db)) == withheld
    stats = await rpc(db, "reactor_stats", p_table="jobs")
    assert stats["realtime"] == {"budget_per_second": 0, "withheld": withheld}


async def test_the_budget_caps_the_messages_of_a_second(db):
    await stand_by(db, "w1", 16)
    await db.execute("update reactor.realtime_budget set messages_per_second = 3")
    ids = await enqueue(db, "t", 12)  # one statement: within a second, or across one turn at most
    rows = await named(db, ids)
    assert rows[:4] == [("processing", "w1")] * 3 + [("pending", "w1")]  # 3 hand-offs, then a herald
    announced = sum(1 for _, worker in rows if worker is not None)
    assert 4 <= announced <= 8
    assert (await withheld_in_all(db)) == 12 - announced
    assert {status for status, worker in rows if worker is None} == {"pending"}


async def test_a_new_second_starts_a_new_budget(db):
    await stand_by(db, "w1", 16)
    await db.execute("update reactor.realtime_budget set messages_per_second = 3")
    # As if a second five seconds ago had spent its budget a hundred times over.
    await db.execute(
        "select setval('reactor.announced_second', floor(extract(epoch from clock_timestamp()))::bigint - 5),"
        " setval('reactor.announced', 300)"
    )
    ids = await enqueue(db, "t", 1)
    assert await named(db, ids) == [("processing", "w1")]


async def test_budget_zero_still_lets_workers_claim_everything(db):
    await db.execute("update reactor.realtime_budget set messages_per_second = 0")
    await stand_by(db, "w1", 4)
    ids = await enqueue(db, "t", 3)
    claimed = await db.fetch("select id from public.reactor_claim('jobs', 'w1', array['t'], 10)")
    assert sorted(r["id"] for r in claimed) == ids


async def test_a_worker_id_longer_than_realtime_keeps_in_a_cut_record_is_refused(db):
    with pytest.raises(asyncpg.RaiseError, match="1 to 64 bytes"):
        await db.fetch("select * from public.reactor_claim('jobs', $1, array['t'], 1)", "w" * 65)
    with pytest.raises(asyncpg.RaiseError, match="1 to 64 bytes"):
        await db.fetch("select * from public.reactor_claim('jobs', $1, array['t'], 1)", "é" * 33)
    assert await db.fetch("select * from public.reactor_claim('jobs', $1, array['t'], 1)", "w" * 64) == []


async def test_one_owners_burst_gets_its_share_then_a_herald_then_nobody(db):
    await stand_by(db, "w1", 16)
    await db.execute("update reactor.realtime_budget set per_owner_per_second = 3")
    burst = await enqueue(db, "t", 8, user_id=uuid.uuid4())  # one statement: one second
    rows = await named(db, burst)
    assert rows == [("processing", "w1")] * 3 + [("pending", "w1")] + [("pending", None)] * 4
    # Everyone else keeps their hand-offs: another owner, and the project's own rows (no owner).
    others = await enqueue(db, "t", user_id=uuid.uuid4()) + await enqueue(db, "t")
    assert await named(db, others) == [("processing", "w1")] * 2
    assert (await withheld_in_all(db)) == 4  # so workers tick fast to claim them


async def test_an_owners_share_counts_the_last_second_only(db):
    await stand_by(db, "w1", 16)
    await db.execute("update reactor.realtime_budget set per_owner_per_second = 2")
    owner = uuid.uuid4()
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    await enqueue(db, "u", 5, user_id=owner, created_at=earlier)  # no standby for "u": not announced
    assert await named(db, await enqueue(db, "t", user_id=owner)) == [("processing", "w1")]


async def test_an_owner_with_no_share_gets_one_herald_a_second(db):
    await stand_by(db, "w1", 16)
    await db.execute("update reactor.realtime_budget set per_owner_per_second = 0")
    rows = await named(db, await enqueue(db, "t", 3, user_id=uuid.uuid4()))
    assert rows == [("pending", "w1"), ("pending", None), ("pending", None)]
