"""Bad input gets an error that names the problem, and a rejected batch changes nothing."""

import uuid

import asyncpg
import pytest

from tests.support.contract import claim, enqueue, leases, row, rpc

pytestmark = pytest.mark.anyio

RAISED = asyncpg.RaiseError


@pytest.mark.parametrize(
    "name",
    [
        "nope",
        "jobs; drop table public.jobs",
        '"jobs"',
        "public.jobs",
        "JOBS",
        "",
        None,
        "jobs' or '1'='1",
        "reactor.job_tables",
    ],
)
async def test_unknown_or_injection_shaped_table_names_are_refused(db, name):
    await enqueue(db, "t")
    expected = "job table name is missing" if not name else "unknown job table"
    with pytest.raises(RAISED, match=expected):
        await claim(db, ["t"], table=name)
    with pytest.raises(RAISED, match=expected):
        await rpc(db, "reactor_stats", p_table=name)
    assert await db.fetchval("select count(*) from public.jobs") == 1


@pytest.mark.parametrize("limit", [0, -1, 1001, 2**31 - 1, None])
async def test_claim_limit_out_of_bounds_is_refused(db, limit):
    await enqueue(db, "t")
    with pytest.raises(RAISED, match="p_limit"):
        await claim(db, ["t"], limit=limit)


@pytest.mark.parametrize("lease", [0, -5, 86401, None])
async def test_lease_length_out_of_bounds_is_refused(db, lease):
    await enqueue(db, "t")
    with pytest.raises(RAISED, match="p_lease_seconds"):
        await claim(db, ["t"], lease=lease)


@pytest.mark.parametrize("types", [[], None, ["t", None]])
async def test_claim_needs_job_types(db, types):
    with pytest.raises(RAISED, match="p_job_types"):
        await claim(db, types)


@pytest.mark.parametrize("worker", ["", None, "w" * 65])
async def test_claim_needs_a_worker_id(db, worker):
    with pytest.raises(RAISED, match="p_worker"):
        await claim(db, ["t"], worker=worker)


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"lease_token": None}, "item 2: lease_token is missing"),
        ({"lease_token": "not-a-uuid"}, "item 2: lease_token is not a UUID"),
        ({"lease_token": 42}, "item 2: lease_token is missing"),
        ({"id": "1"}, "item 2: id must be a positive integer"),
        ({"id": -3}, "item 2: id must be a positive integer"),
        ({"id": 1.5}, "item 2: id must be a positive integer"),
        ({"id": 10**30}, "item 2: id must be a positive integer"),
        ({"extra": 1}, 'item 2: unknown key "extra"'),
        ({"result": 1}, 'item 2: unknown key "result"'),
    ],
)
async def test_a_malformed_heartbeat_item_rejects_the_whole_batch(db, bad, message):
    await enqueue(db, "t", 2)
    jobs = await claim(db, ["t"], limit=2, lease=5)
    items = leases(jobs)
    items[1] = {**items[1], **bad}
    with pytest.raises(RAISED, match=message):
        await rpc(db, "reactor_heartbeat", p_table="jobs", p_leases=items)
    assert (await row(db, jobs[0]["id"]))["lease_expires_at"] == jobs[0]["lease_expires_at"]


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"error": None}, "item 2: error must be a non-empty string"),
        ({"error": ""}, "item 2: error must be a non-empty string"),
        ({"retry_at": "next tuesday"}, "item 2: retry_at must be an ISO 8601 timestamp"),
        ({"permanent": "yes"}, "item 2: permanent must be true or false"),
    ],
)
async def test_a_malformed_fail_item_rejects_the_whole_batch(db, bad, message):
    await enqueue(db, "t", 2)
    jobs = await claim(db, ["t"], limit=2)
    items = leases(jobs, error="boom")
    items[1] = {**items[1], **bad}
    with pytest.raises(RAISED, match=message):
        await rpc(db, "reactor_fail", p_table="jobs", p_jobs=items)
    assert (await row(db, jobs[0]["id"]))["status"] == "processing"


@pytest.mark.parametrize(
    "items,message",
    [
        ({"id": 1}, "items must be a JSON array"),
        (None, "items must be a JSON array"),
        (["x"], "item 1: must be a JSON object"),
    ],
)
async def test_a_batch_that_is_not_an_array_of_objects_is_refused(db, items, message):
    with pytest.raises(RAISED, match=message):
        await rpc(db, "reactor_complete", p_table="jobs", p_jobs=items)


async def test_a_job_twice_in_one_batch_is_refused(db):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    with pytest.raises(RAISED, match="appears twice"):
        await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([job, job], result=1))
    assert (await row(db, job["id"]))["status"] == "processing"


async def test_a_batch_of_ten_thousand_is_refused_whole_and_a_thousand_accepted(db):
    await enqueue(db, "t", 1000)
    jobs = await claim(db, ["t"], limit=1000)
    fake = [{"id": 10**6 + i, "lease_token": str(uuid.uuid4()), "result": i} for i in range(9000)]
    with pytest.raises(RAISED, match="a batch holds at most 1000 items, got 10000"):
        await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases(jobs, result=1) + fake)
    assert await db.fetchval("select count(*) from public.jobs where status = 'completed'") == 0
    report = await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases(jobs, result=1))
    assert len(report["completed"]) == 1000


@pytest.mark.parametrize("progress", [-1, 101, None])
async def test_progress_out_of_range_is_refused(db, progress):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    with pytest.raises(RAISED, match="p_progress"):
        await db.execute(
            "select public.reactor_progress('jobs', $1, $2, $3, null)",
            job["id"],
            job["lease_token"],
            progress,
        )


async def test_progress_needs_a_lease_token(db):
    with pytest.raises(RAISED, match="p_lease_token is missing"):
        await db.execute("select public.reactor_progress('jobs', 1, null, 5, null)")


@pytest.mark.parametrize(
    "call,message",
    [
        ("select public.reactor_cancel('jobs', null)", "p_ids must list"),
        ("select public.reactor_cancel('jobs', array[null]::bigint[])", "p_ids must list"),
        ("select public.reactor_prune('jobs', -1, 10)", "p_older_than_seconds"),
        ("select public.reactor_prune('jobs', 10, 0)", "p_limit"),
        ("select public.reactor_reap('jobs', 0)", "p_limit"),
        ("select public.reactor_retry('jobs', null, null, 5000)", "p_limit"),
    ],
)
async def test_operator_calls_with_bad_arguments_are_refused(db, call, message):
    with pytest.raises(RAISED, match=message):
        await db.execute(call)


@pytest.mark.parametrize(
    "bad",
    [
        {"job_type": ""},
        {"max_attempts": 0},
        {"max_attempts": 1001},
    ],
)
async def test_invalid_jobs_cannot_be_inserted(db, bad):
    with pytest.raises(asyncpg.CheckViolationError):
        await enqueue(db, **{"job_type": "t", **bad})


async def test_a_batch_names_its_first_bad_item_and_that_items_first_problem(db):
    """0005 validates a batch in one query; the order of 0003's item-by-item checks still holds."""
    ok = {"id": 1, "lease_token": str(uuid.uuid4())}

    async def refusal(items):
        with pytest.raises(RAISED) as raised:
            await rpc(db, "reactor_complete", p_table="jobs", p_jobs=items)
        return str(raised.value)

    assert await refusal([ok, {"id": 2, "lease_token": "x"}, {"id": 3, "nope": 1}]) == (
        "item 2: lease_token is not a UUID"
    )
    assert await refusal([{"id": -1, "zz": 1, "aa": 2, "lease_token": "x"}]) == 'item 1: unknown key "aa"'
    assert await refusal([ok, {"id": 2, "lease_token": "x"}, ok]) == "item 2: lease_token is not a UUID"
    assert await refusal([ok, {**ok, "lease_token": "x"}]) == "item 2: job 1 appears twice in one batch"
    assert await refusal([{"id": 1000, "lease_token": 5}]) == "item 1: lease_token is missing"
    assert await refusal([{"id": 1000.0, "lease_token": "x"}]) == "item 1: id must be a positive integer"


async def test_a_lease_token_in_any_form_postgres_reads_is_accepted(db):
    await enqueue(db, "t")
    [job] = await claim(db, ["t"])
    token = "{" + str(job["lease_token"]).upper().replace("-", "") + "}"
    answer = await rpc(
        db, "reactor_complete", p_table="jobs", p_jobs=[{"id": job["id"], "lease_token": token}]
    )
    assert answer == {"completed": [job["id"]], "stale": []}
