import uuid

import asyncpg
import pytest

from tests.support.contract import claim, enqueue, leases, row, rpc

pytestmark = pytest.mark.anyio


async def test_complete_stores_the_result_and_ends_the_lease(db: asyncpg.Connection):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    report = await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job], result={"n": 1}))
    assert report == {"completed": [job["id"]], "stale": []}
    stored = await row(db, job["id"])
    assert stored["status"] == "completed"
    assert stored["result"] == '{"n": 1}'
    assert stored["progress"] == 100
    assert stored["completed_at"] is not None
    assert stored["lease_token"] is None and stored["lease_expires_at"] is None


async def test_heartbeat_extends_only_current_leases(db: asyncpg.Connection):
    await enqueue(db, "t", 2)
    jobs = await claim(db, ["t"], limit=2, lease=5)
    before = await row(db, jobs[0]["id"])
    stale = {"id": jobs[1]["id"], "lease_token": str(uuid.uuid4())}
    report = await rpc(
        db, "reactor_heartbeat", p_table="jobs", p_leases=[*leases(jobs[:1]), stale], p_lease_seconds=120
    )
    assert report == {"extended": [jobs[0]["id"]], "stale": [jobs[1]["id"]]}
    after = await row(db, jobs[0]["id"])
    assert (after["lease_expires_at"] - before["lease_expires_at"]).total_seconds() > 100
    assert (await row(db, jobs[1]["id"]))["lease_expires_at"] == jobs[1]["lease_expires_at"]


@pytest.mark.parametrize("call", ["complete", "fail", "heartbeat", "release", "progress"])
async def test_a_stale_token_changes_nothing_and_says_so(db: asyncpg.Connection, call: str):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    before = await row(db, job["id"])
    wrong = [{"id": job["id"], "lease_token": str(uuid.uuid4())}]
    if call == "progress":
        applied = await db.fetchval(
            "select public.reactor_progress('jobs', $1, $2, 50, 'x')", job["id"], uuid.uuid4()
        )
        assert applied is False
    else:
        items = {"complete": [{**wrong[0], "result": 1}], "fail": [{**wrong[0], "error": "e"}]}
        arg = "p_jobs" if call in ("complete", "fail") else "p_leases"
        report = await rpc(db, f"reactor_{call}", p_table="jobs", **{arg: items.get(call, wrong)})
        assert report["stale"] == [job["id"]]
        assert all(v == [] for k, v in report.items() if k != "stale")
    assert await row(db, job["id"]) == before


async def test_reclaimed_jobs_old_worker_cannot_overwrite_the_new_owner(db: asyncpg.Connection):
    await enqueue(db, "t")
    [old] = await claim(db, ["t"], worker="old")
    await db.execute("update public.jobs set lease_expires_at = now() - interval '1 s'")
    await rpc(db, "reactor_reap", p_table="jobs")
    await db.execute("update public.jobs set run_at = now()")
    [new] = await claim(db, ["t"], worker="new")
    late = await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([old], result="late"))
    assert late == {"completed": [], "stale": [old["id"]]}
    stored = await row(db, new["id"])
    assert (stored["status"], stored["locked_by"], stored["attempts"]) == ("processing", "new", 2)
    done = await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([new], result="mine"))
    assert done["completed"] == [new["id"]]
    assert (await row(db, new["id"]))["result"] == '"mine"'


async def test_a_completed_job_cannot_be_completed_again(db: asyncpg.Connection):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job], result=1))
    again = await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job], result=2))
    assert again == {"completed": [], "stale": [job["id"]]}
    assert (await row(db, job["id"]))["result"] == "1"


async def test_progress_is_written_through_for_the_lease_holder(db: asyncpg.Connection):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    applied = await db.fetchval(
        "select public.reactor_progress('jobs', $1, $2, 40, 'rendering')", job["id"], job["lease_token"]
    )
    assert applied is True
    stored = await row(db, job["id"])
    assert (stored["progress"], stored["progress_message"]) == (40, "rendering")


async def test_release_returns_a_job_without_spending_its_attempt(db: asyncpg.Connection):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    report = await rpc(db, "reactor_release", p_table="jobs", p_leases=leases([job]))
    assert report == {"released": [job["id"]], "stale": []}
    stored = await row(db, job["id"])
    assert (stored["status"], stored["attempts"], stored["lease_token"]) == ("pending", 0, None)
    assert [j["id"] for j in await claim(db, ["t"])] == [job["id"]]


async def test_a_heartbeat_names_the_stale_leases_of_cancelled_jobs(db: asyncpg.Connection):
    await enqueue(db, "t", n=3)
    cancelled, reaped, held = await claim(db, ["t"], limit=3)
    await rpc(db, "reactor_cancel", p_table="jobs", p_ids=[cancelled["id"]])
    await db.execute("update public.jobs set lease_token = gen_random_uuid() where id = $1", reaped["id"])
    answer = await rpc(db, "reactor_heartbeat", p_table="jobs", p_leases=leases([cancelled, reaped, held]))
    assert answer == {
        "extended": [held["id"]],
        "stale": sorted([cancelled["id"], reaped["id"]]),
        "cancelled": [cancelled["id"]],
    }
    assert "cancelled" not in await rpc(db, "reactor_heartbeat", p_table="jobs", p_leases=leases([held]))
