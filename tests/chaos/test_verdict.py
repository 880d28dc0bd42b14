"""The chaos verdict catches what it exists to catch: a lost or stuck job, a late report that
overwrote the new owner, a rerun no reclaim explains. Jobs go through the real SQL contract; the
bugs are written into the table directly, as a broken worker function would write them."""

from __future__ import annotations

import json
import time
from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest

from tests.chaos.verdict import Fates, examine
from tests.support.contract import claim, enqueue, leases, rpc

pytestmark = pytest.mark.anyio

NO_FATES = Fates(killed=set(), frozen=set(), outcomes_lost=set())


@pytest.fixture
async def audited(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(files("tests.chaos").joinpath("audit.sql").read_text())
    return db


def ran(path: Path, *claims: asyncpg.Record) -> None:
    with path.open("a") as runs:
        for c in claims:
            line = {"id": c["id"], "attempt": c["attempt"], "lease_token": str(c["lease_token"])}
            runs.write(json.dumps({**line, "worker": c["worker"], "at": time.time()}) + "\n")


async def take(db: asyncpg.Connection, worker: str) -> asyncpg.Record:
    [job] = await claim(db, ["chaos"], worker=worker)
    return {**job, "worker": worker}


async def complete(db: asyncpg.Connection, job: dict) -> None:
    result = {"worker": job["worker"], "attempt": job["attempt"], "lease_token": str(job["lease_token"])}
    done = await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job], result=result))
    assert done["completed"] == [job["id"]]


async def reclaim(db: asyncpg.Connection, worker: str) -> dict:
    await db.execute(
        "update public.jobs set lease_expires_at = now() - interval '1 s' where status = 'processing'"
    )
    await rpc(db, "reactor_reap", p_table="jobs")
    await db.execute("update public.jobs set run_at = now() where status = 'pending'")
    return await take(db, worker)


async def test_a_rerun_after_a_killed_worker_is_explained_and_nothing_else_is_flagged(
    audited: asyncpg.Connection, tmp_path: Path
) -> None:
    await enqueue(audited, "chaos")
    first = await take(audited, "w0.1")
    second = await reclaim(audited, "w1.1")
    await complete(audited, second)
    ran(tmp_path / "runs", first, second)
    fates = Fates(killed={"w0.1"}, frozen=set(), outcomes_lost=set())
    verdict = await examine(audited, tmp_path / "runs", 1, fates, [])
    assert verdict.problems == []
    assert dict(verdict.duplicate_runs) == {"worker killed": 1}


async def test_a_late_report_that_overwrote_the_new_owner_is_flagged(
    audited: asyncpg.Connection, tmp_path: Path
) -> None:
    await enqueue(audited, "chaos")
    old = await take(audited, "w0.1")
    new = await reclaim(audited, "w1.1")
    stale = {"worker": "w0.1", "attempt": 1, "lease_token": str(old["lease_token"])}
    await audited.execute(  # a complete without the lease-token check (River #1302)
        "update public.jobs set status = 'completed', result = $1::jsonb, lease_token = null",
        json.dumps(stale),
    )
    ran(tmp_path / "runs", old, new)
    verdict = await examine(audited, tmp_path / "runs", 1, NO_FATES, [])
    assert any("completed by a run that did not hold its lease" in p for p in verdict.problems), (
        verdict.problems
    )


async def test_a_lost_job_and_a_stuck_job_are_flagged(audited: asyncpg.Connection, tmp_path: Path) -> None:
    await enqueue(audited, "chaos", 2)
    done = await take(audited, "w0.1")
    await complete(audited, done)
    stuck = await take(audited, "w0.1")
    ran(tmp_path / "runs", done, stuck)
    verdict = await examine(audited, tmp_path / "runs", 3, NO_FATES, [])
    assert verdict.problems[:2] == [
        "3 jobs inserted, 2 in the table",
        f"1 jobs not completed, e.g. {stuck['id']} processing attempt 1",
    ]


async def test_a_second_run_under_the_same_lease_is_flagged(
    audited: asyncpg.Connection, tmp_path: Path
) -> None:
    await enqueue(audited, "chaos")
    job = await take(audited, "w0.1")
    await complete(audited, job)
    ran(tmp_path / "runs", job, job)
    verdict = await examine(audited, tmp_path / "runs", 1, NO_FATES, [])
    assert verdict.problems == [f"job {job['id']} ran 2 times under one lease {job['lease_token']}"]


async def test_a_finished_job_that_changes_again_is_flagged(
    audited: asyncpg.Connection, tmp_path: Path
) -> None:
    await enqueue(audited, "chaos")
    job = await take(audited, "w0.1")
    await complete(audited, job)
    await audited.execute("update public.jobs set result = '\"overwritten\"'")
    ran(tmp_path / "runs", job)
    verdict = await examine(audited, tmp_path / "runs", 1, NO_FATES, [])
    assert len(verdict.problems) == 1 and "changed after it finished" in verdict.problems[0]


async def test_a_rerun_after_a_hand_off_nobody_confirmed_is_explained(
    audited: asyncpg.Connection, tmp_path: Path
) -> None:
    await audited.execute("select * from public.reactor_claim('jobs', 'w0.1', array['chaos'], 5, 60, 30)")
    [job_id] = await enqueue(audited, "chaos")
    handed = await audited.fetchrow(
        "select id, attempts as attempt, lease_token, locked_by as worker from public.jobs where id = $1",
        job_id,
    )
    assert handed["worker"] == "w0.1"
    second = await reclaim(audited, "w1.1")
    assert second["attempt"] == 1  # the unconfirmed hand-off gave its attempt back
    ran(tmp_path / "runs", dict(handed), second)
    await complete(audited, second)
    verdict = await examine(audited, tmp_path / "runs", 1, NO_FATES, [])
    assert verdict.problems == []
    assert dict(verdict.duplicate_runs) == {"hand-off not confirmed in time": 1}
    assert len(verdict.pickup_seconds) == 1 and 0 <= verdict.pickup_seconds[0] < 60
