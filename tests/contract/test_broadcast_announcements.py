"""The rows that name a worker reach it by Broadcast from Database (sql/migrations/0022): each is
written to realtime.messages, in the inserting transaction, for the private topic of the worker it
names, and for nobody else."""

import json
import uuid

import asyncpg
import pytest

from tests.support.contract import acting_as, enqueue, stand_by

pytestmark = pytest.mark.anyio

USER = str(uuid.uuid4())


async def sent(db: asyncpg.Connection) -> list[dict]:
    """The broadcasts the database has written, oldest first."""
    rows = await db.fetch(
        "select topic, event, private, extension, payload from realtime.messages order by inserted_at, id"
    )
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


async def topic(db: asyncpg.Connection, worker: str) -> str:
    return await db.fetchval("select public.reactor_worker_topic($1)", worker)


async def test_a_hand_off_is_broadcast_whole_to_its_workers_private_topic(db):
    await stand_by(db, "w1", 1)
    await db.execute("delete from realtime.messages")
    (job,) = await enqueue(db, "t", payload={"n": 1})
    (message,) = await sent(db)
    assert (message["topic"], message["event"], message["private"], message["extension"]) == (
        await topic(db, "w1"),
        "job",
        True,
        "broadcast",
    )
    assert message["payload"]["table"] == "jobs"
    record = message["payload"]["record"]
    stored = await db.fetchrow("select * from public.jobs where id = $1", job)
    assert (record["id"], record["status"], record["locked_by"]) == (job, "processing", "w1")
    assert (record["payload"], record["lease_token"]) == ({"n": 1}, str(stored["lease_token"]))


async def test_a_heralds_pending_job_goes_without_its_payload_and_a_row_naming_nobody_is_not_sent(db):
    await stand_by(db, "w1", 1)
    await enqueue(db, "t")  # takes w1's only slot: the next insert names w1 its herald
    await db.execute("delete from realtime.messages")
    (heralded,) = await enqueue(db, "t", payload={"secret": "x" * 100})
    await enqueue(db, "nobody handles this")
    (message,) = await sent(db)
    record = message["payload"]["record"]
    assert (record["id"], record["status"], record["locked_by"]) == (heralded, "pending", "w1")
    assert "payload" not in record


async def test_a_hand_off_with_a_large_payload_goes_without_it_and_the_worker_claims_it_whole(db):
    await stand_by(db, "w1", 1)
    await db.execute("delete from realtime.messages")
    big = {"data": uuid.uuid4().hex * 4000}  # 128 KB that does not compress away
    limit = await db.fetchval("select reactor.max_announced_payload_bytes()")
    assert await db.fetchval("select pg_column_size($1::jsonb)", json.dumps(big)) > limit
    (job,) = await enqueue(db, "t", payload=big)
    (message,) = await sent(db)
    assert message["payload"]["record"]["id"] == job and "payload" not in message["payload"]["record"]


async def test_a_users_insert_is_announced_though_the_user_may_neither_write_nor_read_broadcasts(db):
    await db.execute("select reactor.allow_insert('jobs', 't')")
    await stand_by(db, "w1", 1)
    await db.execute("delete from realtime.messages")
    async with acting_as(db, "authenticated", USER) as conn:
        job = await conn.fetchval("insert into public.jobs (job_type) values ('t') returning id")
    async with acting_as(db, "authenticated", USER) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("select public.reactor_worker_topic('w1')")
    async with acting_as(db, "authenticated", USER) as conn:
        assert await conn.fetchval("select count(*) from realtime.messages") == 0  # RLS: no policy
    (message,) = await sent(db)
    assert message["payload"]["record"]["id"] == job and message["topic"] == await topic(db, "w1")


async def test_each_worker_has_its_own_topic_that_its_id_alone_does_not_give_away(db):
    first, second = await topic(db, "w1"), await topic(db, "w2")
    assert first != second and first.startswith("reactor:") and "w1" not in first
    await db.execute("update reactor.topic_key set key = gen_random_uuid()")
    assert await topic(db, "w1") != first  # derived from the project's secret key


async def test_a_probe_and_a_cancel_signal_are_announced_to_the_worker_they_name(db):
    await db.execute("delete from realtime.messages")
    await db.fetchval("select public.reactor_tick('jobs', 'w1', array['t'], 0, 60, false, true)")
    messages = await sent(db)
    assert [m["payload"]["record"]["job_type"] for m in messages] == ["reactor.probe"]
    assert messages[0]["topic"] == await topic(db, "w1")
    assert messages[0]["payload"]["record"]["payload"] == {"worker": "w1"}


async def test_without_realtimes_schema_inserts_still_work_and_the_worker_is_told_why_it_cannot_listen(db):
    await stand_by(db, "w1", 1)
    tx = db.transaction()
    await tx.start()
    try:
        await db.execute("alter function realtime.send(jsonb, text, text, boolean) rename to send_gone")
        (job,) = await enqueue(db, "t")
        assert await db.fetchval("select status from public.jobs where id = $1", job) == "processing"
        with pytest.raises(asyncpg.RaiseError, match=r"no realtime\.send"):
            await topic(db, "w1")
    finally:
        await tx.rollback()
