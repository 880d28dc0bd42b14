"""Job logs (sql/migrations/0016): lines a running job writes, which its owner reads and nobody
else, at most reactor.max_log_lines() a job, deleted with the job."""

import json
import uuid

import asyncpg
import pytest

from tests.support.contract import acting_as, claim, enqueue, leases, rpc

pytestmark = pytest.mark.anyio

ALICE, BOB = str(uuid.uuid4()), str(uuid.uuid4())


def lines(job: asyncpg.Record, *messages: str, level: str = "info", **extra) -> str:
    token = str(job["lease_token"])
    return json.dumps(
        [{"id": job["id"], "lease_token": token, "level": level, "message": m, **extra} for m in messages]
    )


async def log(db: asyncpg.Connection, job: asyncpg.Record, *messages: str, **extra) -> dict:
    return await rpc(db, "reactor_log", p_table="jobs", p_lines=lines(job, *messages, **extra))


async def running(db: asyncpg.Connection, user: str = ALICE) -> asyncpg.Record:
    await enqueue(db, "t", user_id=user)
    [job] = await claim(db, ["t"])
    return job


async def test_the_lease_holder_writes_lines_in_order_with_the_owner_and_attempt(db):
    job = await running(db)
    assert await log(db, job, "fetching", "parsing") == {"written": 2, "dropped": 0, "stale": []}
    rows = await db.fetch("select * from public.job_logs order by id")
    assert [
        (r["job_table"], r["job_id"], str(r["user_id"]), r["attempt"], r["level"], r["message"]) for r in rows
    ] == [
        ("jobs", job["id"], ALICE, 1, "info", "fetching"),
        ("jobs", job["id"], ALICE, 1, "info", "parsing"),
    ]


async def test_lines_of_a_lease_not_held_are_not_written(db):
    job = await running(db)
    stale = {**dict(job), "lease_token": uuid.uuid4()}
    assert await log(db, stale, "forged") == {"written": 0, "dropped": 0, "stale": [job["id"]]}
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job]))
    assert await log(db, job, "too late") == {"written": 0, "dropped": 0, "stale": [job["id"]]}
    assert await db.fetchval("select count(*) from public.job_logs") == 0


async def test_a_job_writes_at_most_a_thousand_lines_and_long_ones_are_cut(db):
    job = await running(db)
    assert (await log(db, job, *(str(n) for n in range(999))))["written"] == 999
    assert await log(db, job, "x" * 5000, "one too many") == {"written": 1, "dropped": 1, "stale": []}
    assert await db.fetchval("select max(length(message)) from public.job_logs") == 2000


@pytest.mark.parametrize(
    "line, problem",
    [
        ({"id": 1, "lease_token": "x", "level": "info", "message": "m"}, "line 1: lease_token is not a UUID"),
        (
            {"id": 0, "lease_token": str(uuid.uuid4()), "level": "info", "message": "m"},
            "line 1: id must be a positive integer",
        ),
        (
            {"id": 1, "lease_token": str(uuid.uuid4()), "level": "fatal", "message": "m"},
            "line 1: level must be debug, info, warning or error",
        ),
        (
            {"id": 1, "lease_token": str(uuid.uuid4()), "level": "info", "message": 3},
            "line 1: message must be text",
        ),
        (
            {"id": 1, "lease_token": str(uuid.uuid4()), "level": "info", "message": "m", "logged_at": "soon"},
            "line 1: logged_at must be an ISO 8601 timestamp",
        ),
    ],
)
async def test_a_malformed_line_is_refused_with_what_is_wrong(db, line, problem):
    with pytest.raises(asyncpg.PostgresError, match=problem):
        await rpc(db, "reactor_log", p_table="jobs", p_lines=json.dumps([line]))


async def test_a_line_cannot_claim_to_come_from_the_future(db):
    job = await running(db)
    await log(db, job, "later", logged_at="2150-01-01T00:00:00Z")
    assert await db.fetchval("select logged_at <= now() from public.job_logs")


async def test_owners_read_their_jobs_lines_and_nobody_else_reads_or_writes_any(db):
    job = await running(db, ALICE)
    await log(db, job, "for alice")
    async with acting_as(db, "authenticated", ALICE):
        assert [r["message"] for r in await db.fetch("select message from public.job_logs")] == ["for alice"]
    async with acting_as(db, "authenticated", BOB):
        assert await db.fetch("select message from public.job_logs") == []
    for role, sub in (("anon", None), ("authenticated", ALICE)):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with acting_as(db, role, sub):
                await db.execute(
                    "insert into public.job_logs (job_table, job_id, user_id, attempt, level, message)"
                    " values ('jobs', $1, $2, 1, 'info', 'forged')",
                    job["id"],
                    uuid.UUID(ALICE),
                )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with acting_as(db, "anon"):
            await db.fetch("select message from public.job_logs")


async def test_lines_are_deleted_with_their_job_and_only_theirs(db):
    job, other = await running(db), await running(db)
    await log(db, job, "one")
    await log(db, other, "two")
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job]))
    await db.execute(
        "update public.jobs set completed_at = now() - interval '2 days' where id = $1", job["id"]
    )
    assert await rpc(db, "reactor_prune", p_table="jobs", p_older_than_seconds=86400) == {"pruned": 1}
    assert [r["message"] for r in await db.fetch("select message from public.job_logs")] == ["two"]


async def test_every_error_a_jobs_row_records_is_a_line_of_its_log(db):
    job = await running(db)
    await rpc(db, "reactor_fail", p_table="jobs", p_jobs=leases([job], error="ConnectionError: refused"))
    await db.execute("update public.jobs set run_at = now() where id = $1", job["id"])
    await claim(db, ["t"], lease=1)
    await db.execute(
        "update public.jobs set lease_expires_at = now() - interval '1 s' where id = $1", job["id"]
    )
    await rpc(db, "reactor_reap", p_table="jobs")
    await db.execute("update public.jobs set run_at = now() where id = $1", job["id"])
    [last] = await claim(db, ["t"])
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([last], result=1))
    lines = await db.fetch("select attempt, level, message from public.job_logs order by id")
    assert [tuple(r) for r in lines] == [
        (1, "error", "ConnectionError: refused"),
        (2, "error", "lease expired: worker w1 stopped reporting during attempt 2 of 5"),
    ]
    async with acting_as(db, "authenticated", ALICE):
        assert len(await db.fetch("select message from public.job_logs")) == 2


async def test_a_jobs_errors_count_against_its_own_lines_only(db):
    job = await running(db)
    # A thousand lines of another job of the table, and of a job of another table with this id.
    for table, job_id in (("jobs", job["id"] + 1000), ("emails", job["id"])):
        await db.execute(
            "insert into public.job_logs (job_table, job_id, attempt, level, message)"
            " select $1, $2, 1, 'info', 'line' from generate_series(1, 1000)",
            table,
            job_id,
        )
    await rpc(db, "reactor_fail", p_table="jobs", p_jobs=leases([job], error="ValueError: bad"))
    mine = await db.fetch(
        "select message from public.job_logs where job_table = 'jobs' and job_id = $1", job["id"]
    )
    assert [r["message"] for r in mine] == ["ValueError: bad"]
