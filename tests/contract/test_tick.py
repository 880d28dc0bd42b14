"""reactor_tick: a worker's periodic chores (reap, claim, next due job, statistics, probe) in one call."""

from __future__ import annotations

import json

import asyncpg
import pytest

from tests.support.contract import claim, enqueue, row, rpc

pytestmark = pytest.mark.anyio


async def tick(db: asyncpg.Connection, limit: int = 10, **options) -> dict:
    args = {
        "p_table": "jobs",
        "p_worker": "w1",
        "p_job_types": ["t"],
        "p_limit": limit,
        "p_lease_seconds": 60,
        **options,
    }
    names = ", ".join(f"{name} => ${i + 1}" for i, name in enumerate(args))
    return json.loads(await db.fetchval(f"select public.reactor_tick({names})", *args.values()))


async def test_tick_claims_due_jobs_of_its_types_like_a_claim(db):
    due = await enqueue(db, "t", n=3)
    await enqueue(db, "other")
    answer = await tick(db, limit=2)
    assert [job["id"] for job in answer["claimed"]] == due[:2]
    assert {job["attempt"] for job in answer["claimed"]} == {1}
    assert (await row(db, due[0]))["status"] == "processing"
    assert (await row(db, due[2]))["status"] == "pending"


async def test_tick_with_no_free_slots_claims_nothing_but_still_reaps(db):
    [job_id] = await enqueue(db, "t")
    await claim(db, ["t"], lease=1)
    await db.execute("update public.jobs set lease_expires_at = now() - interval '1 s' where id = $1", job_id)
    answer = await tick(db, limit=0)
    assert answer["claimed"] == []
    assert answer["reaped"] == {"requeued": [job_id], "failed": []}
    assert (await row(db, job_id))["status"] == "pending"


async def test_tick_reports_when_the_next_scheduled_job_of_its_types_falls_due(db):
    await db.execute(
        "insert into public.jobs (job_type, run_at) values "
        "('t', now() + interval '90 s'), ('t', now() + interval '30 s'), ('other', now() + interval '5 s')"
    )
    answer = await tick(db)
    assert answer["claimed"] == []
    assert 29 < answer["next_due_seconds"] <= 30


async def test_tick_reports_nothing_due_when_no_job_is_scheduled(db):
    await enqueue(db, "t")
    answer = await tick(db)
    assert len(answer["claimed"]) == 1
    assert answer["next_due_seconds"] is None


async def test_tick_returns_statistics_only_when_asked(db):
    await enqueue(db, "t", n=2)
    assert (await tick(db, limit=0))["stats"] is None
    stats = (await tick(db, limit=0, p_stats=True))["stats"]
    assert stats["counts"]["pending"] == 2
    assert stats["pending_by_type"] == {"t": 2}


async def test_probe_row_is_inserted_cancelled_then_deleted_by_the_next_tick(db):
    first = (await tick(db, p_probe=True))["probe"]
    probe = await row(db, first)
    assert (probe["job_type"], probe["status"], probe["payload"], probe["locked_by"]) == (
        "reactor.probe",
        "cancelled",
        '{"worker": "w1"}',
        "w1",  # the only worker whose Realtime filter (locked_by=eq.w1) hears it
    )
    second = (await tick(db, p_probe=True, p_old_probe=first))["probe"]
    assert await row(db, first) is None
    await tick(db, p_old_probe=second)
    assert await db.fetchval("select count(*) from public.jobs") == 0


async def test_tick_deletes_only_probe_rows(db):
    [job_id] = await enqueue(db, "t", status="cancelled")
    await tick(db, p_old_probe=job_id)
    assert (await row(db, job_id))["status"] == "cancelled"


async def test_statistics_leave_out_probe_rows(db):
    await tick(db, p_probe=True)
    await enqueue(db, "t", status="cancelled")
    stats = await rpc(db, "reactor_stats", p_table="jobs")
    assert stats["counts"]["cancelled"] == 1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"p_limit": -1}, "p_limit must be between 0 and 1000"),
        ({"p_limit": 1001}, "p_limit must be between 0 and 1000"),
        ({"p_job_types": []}, "p_job_types must list the job types this worker handles"),
        ({"p_worker": ""}, "p_worker must be a worker id"),
        ({"p_table": "nope"}, 'unknown job table "nope"'),
        ({"p_lease_seconds": 0}, "p_lease_seconds must be between 1 and 86400"),
    ],
)
async def test_tick_rejects_bad_arguments_with_a_clear_error(db, options, message):
    with pytest.raises(asyncpg.RaiseError, match=message):
        await tick(db, **{"p_limit": 1, **options})
