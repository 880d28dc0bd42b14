"""Every inserted row is hostile: what one signed-in user can insert, tried as an attacker would
with the official client against the local stack and a running worker. No row may crash the
worker, stall other jobs, buy priority, act for another user or read a secret.
docs/reliability.md ("Hostile rows") lists each finding and the test that proves it fixed."""

from __future__ import annotations

import json
import uuid

import anyio
import asyncpg
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient, acreate_client

from reactor import Job, Reactor
from tests.support.realtime import client as realtime_client
from tests.support.realtime import subscribe
from tests.support.worker import NO_POLLING, insert, running, status_is, subscribed, wait_until, worker_config

pytestmark = pytest.mark.anyio

ALICE = str(uuid.uuid4())
SECRET = "sk-live-not-for-rows-1234"
OWNER_COLUMNS = "id,status,attempts,result,last_error,progress_message"


async def user_client(stack, user_id: str = ALICE) -> AsyncClient:
    client = await acreate_client(stack.url, stack.keys.anon)
    client.postgrest.auth(stack.keys.user_token(user_id))
    return client


def echo_app() -> Reactor:
    app = Reactor()

    @app.handler("echo")
    async def echo(job: Job) -> object:
        return {"payload": job.payload, "owner": job.user_id}

    return app


async def poison_rows(db: asyncpg.Connection) -> list[int]:
    """Rows from before the bounds held (the constraint dropped to plant them): -infinity, a BC
    date; Postgres sends both as text no timestamp parser reads."""
    await db.execute("alter table public.jobs drop constraint jobs_run_at_bounds")
    insert_at = (
        "insert into public.jobs (job_type, run_at) values ('echo', $1::text::timestamptz) returning id"
    )
    return [await db.fetchval(insert_at, "-infinity"), await db.fetchval(insert_at, "0044-03-15 BC")]


async def failed_row(db: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        "select attempts, last_error from public.jobs where id = $1 and status = 'failed'", job_id
    )


@pytest.mark.parametrize("path", ["claim", "hand-off"])
async def test_a_row_the_worker_cannot_read_fails_alone_and_its_batch_runs(stack, db, path) -> None:
    app = echo_app()
    options = NO_POLLING if path == "hand-off" else {}
    async with running(app, worker_config(stack, **options)):
        if path == "hand-off":
            await subscribed(app)
            await wait_until(lambda: db.fetchval("select count(*) from reactor.standby"))
            poison = await poison_rows(db)
            good = [await insert(db, "echo", {"n": n}) for n in range(3)]
        else:
            async with db.transaction():  # one batch: the poison rows and good ones claimed together
                poison = await poison_rows(db)
                good = [await insert(db, "echo", {"n": n}) for n in range(3)]
        for job_id in poison:
            failed = await wait_until(lambda job_id=job_id: failed_row(db, job_id))
            assert failed["attempts"] == 1
            assert failed["last_error"].startswith("the job's row cannot be read: run_at '")
            assert failed["last_error"].endswith("' is not a timestamp this worker can read")
        for job_id in good:
            assert (await status_is(db, job_id, "completed"))["attempts"] == 1
        after = await insert(db, "echo", {"still": "alive"})
        await status_is(db, after, "completed")


def deep(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


async def test_a_frontend_is_told_what_the_policy_refused(stack, db) -> None:
    await db.execute("select reactor.allow_insert('jobs', 'echo', p_max_pending => 3)")
    jobs = (await user_client(stack)).table("jobs")
    refusals = [
        ({"job_type": "nobody_handles_this"}, "42501", 'job type "nobody_handles_this" may not be inserted'),
        ({"job_type": "reactor.probe"}, "42501", 'job type "reactor.probe" may not be inserted'),
        ({"job_type": "echo", "priority": 2**31 - 1}, "PT400", "priority 2147483647 is above the highest"),
        ({"job_type": "echo", "run_at": "infinity"}, "PT400", "is more than 2592000 seconds ahead"),
        ({"job_type": "echo", "payload": {"blob": "x" * 100_000}}, "PT413", "accepts at most 65536"),
        ({"job_type": "echo", "payload": deep(34)}, "PT413", "nested deeper than 32 levels"),
    ]
    for row, code, message in refusals:
        with pytest.raises(APIError) as caught:
            await jobs.insert(row, returning="minimal").execute()
        assert (caught.value.code, message in caught.value.message) == (code, True), row
    for past in ("1970-01-01T00:00:00Z", "-infinity"):  # moved to now: they cannot jump the queue
        row = {"job_type": "echo", "run_at": past, "max_attempts": 1000}
        backdated = (await jobs.insert(row).select("run_at,max_attempts").execute()).data[0]
        assert backdated["run_at"] > "2026" and backdated["max_attempts"] == 5  # lowered to the rule's
    await jobs.insert({"job_type": "echo"}, returning="minimal").execute()
    with pytest.raises(APIError) as caught:
        await jobs.insert({"job_type": "echo"}, returning="minimal").execute()
    assert caught.value.code == "PT429" and "you already have 3 jobs" in caught.value.message
    assert await db.fetchval("select count(*) from public.jobs") == 3


async def test_errors_and_progress_stored_in_a_row_never_hold_the_key_a_secret_or_a_nul(stack, db) -> None:
    await db.execute("select reactor.allow_insert('jobs', 'call_out')")
    app = Reactor()
    key = stack.keys.service_role

    @app.handler("call_out", max_attempts=1)
    async def call_out(job: Job) -> None:
        assert await job.set_progress(10, f"calling with {SECRET}\x00")
        raise RuntimeError(f"GET https://api.example/v1?apikey={key}&token={SECRET} failed:\x00 \udc80")

    client = await user_client(stack)
    async with running(app, worker_config(stack, secrets=(SECRET,))):
        job_id = (await client.table("jobs").insert({"job_type": "call_out"}).select("id").execute()).data[0][
            "id"
        ]
        await status_is(db, job_id, "failed")
    seen = (await client.table("jobs").select(OWNER_COLUMNS).eq("id", job_id).single().execute()).data
    assert seen["progress_message"] == "calling with [REDACTED]\ufffd"
    assert seen["last_error"] == (
        "RuntimeError: GET https://api.example/v1?apikey=[REDACTED]&token=[REDACTED] failed:\ufffd \ufffd"
    )


async def test_owners_see_their_jobs_without_the_lease_or_the_worker_and_cancel_them(stack, db) -> None:
    await db.execute("select reactor.allow_insert('jobs', 'echo')")
    client = await user_client(stack)
    bob = await user_client(stack, str(uuid.uuid4()))
    mine = (
        await client.table("jobs").insert({"job_type": "echo", "payload": {"a": 1}}).select("id").execute()
    ).data[0]
    with pytest.raises(APIError) as caught:
        await client.table("jobs").select("*").execute()
    assert caught.value.code == "42501"  # name the columns: the lease and the worker are not theirs
    with pytest.raises(APIError) as caught:
        await client.table("jobs").select("lease_token,locked_by").execute()
    assert caught.value.code == "42501"
    with pytest.raises(APIError) as caught:
        await bob.rpc("reactor_cancel_own", {"p_table": "jobs", "p_id": mine["id"]}).execute()
    assert caught.value.code == "PT404"
    cancelled = await client.rpc("reactor_cancel_own", {"p_table": "jobs", "p_id": mine["id"]}).execute()
    assert cancelled.data == {"id": mine["id"], "cancelled": True, "status": "cancelled"}
    app = echo_app()
    async with running(app, worker_config(stack)):
        other = (await client.table("jobs").insert({"job_type": "echo"}).select("id").execute()).data[0]
        done = await status_is(db, other["id"], "completed")
        with anyio.fail_after(5):
            assert (await status_is(db, mine["id"], "cancelled"))["attempts"] == 0
    assert done["locked_by"] is not None
    rows = (await client.table("jobs").select(OWNER_COLUMNS).order("id").execute()).data
    assert [r["status"] for r in rows] == ["cancelled", "completed"]
    assert rows[1]["result"] == {"payload": {}, "owner": ALICE}  # the handler knows who asked


async def test_an_owner_watching_over_realtime_never_receives_the_lease_or_the_worker(stack, db) -> None:
    await db.execute("select reactor.allow_insert('jobs', 'echo')")
    watcher = await realtime_client(stack.url, stack.keys.anon, stack.keys.user_token(ALICE))
    feed = await subscribe(watcher, "mine", {"event": "*", "schema": "public", "table": "jobs"})
    client = await user_client(stack)
    app = echo_app()
    async with running(app, worker_config(stack)):
        job_id = (await client.table("jobs").insert({"job_type": "echo"}).select("id").execute()).data[0][
            "id"
        ]
        await status_is(db, job_id, "completed")
    seen = []
    while not seen or seen[-1]["record"].get("status") != "completed":
        seen.append((await feed.next_change())["data"])
    assert seen[0]["type"] == "INSERT" and "processing" in [c["record"]["status"] for c in seen]
    for change in seen:
        assert {"lease_token", "locked_by", "lease_expires_at"}.isdisjoint(change["record"]), change
        assert {"lease_token", "locked_by"}.isdisjoint(c["name"] for c in change["columns"]), change
        assert change["record"]["id"] == job_id
    await watcher.realtime.close()


async def test_a_frontend_double_submit_gets_409_and_the_job_it_already_has(stack, db) -> None:
    await db.execute("select reactor.allow_insert('jobs', 'echo')")
    client = await user_client(stack)
    job = {"job_type": "echo", "unique_key": "checkout-42"}
    first = (await client.table("jobs").insert(job).select("id").execute()).data[0]
    with pytest.raises(APIError) as caught:
        await client.table("jobs").insert(job).select("id").execute()
    assert caught.value.code == "23505"  # PostgREST's 409 Conflict
    assert json.loads(caught.value.details) == {"id": first["id"]}  # watch this one instead
    assert await db.fetchval("select count(*) from public.jobs where unique_key = 'checkout-42'") == 1


async def test_one_users_burst_cannot_spend_the_realtime_budget_others_jobs_are_announced_with(
    stack, db
) -> None:
    """A user's burst used to spend the whole second's budget, leaving everyone else's job of that
    second unannounced until a tick; with no ticks at all here, Bob's job would never start."""
    await db.execute("select reactor.allow_insert('jobs', 'echo')")
    await db.execute("update reactor.realtime_budget set messages_per_second = 20")
    app = echo_app()
    async with running(app, worker_config(stack, concurrency=50, **NO_POLLING)):
        await subscribed(app)
        await wait_until(lambda: db.fetchval("select count(*) from reactor.standby"))
        alice = (await user_client(stack)).table("jobs")
        burst = (await alice.insert([{"job_type": "echo"}] * 30).select("id").execute()).data
        bob = (await user_client(stack, str(uuid.uuid4()))).table("jobs")
        [bobs] = (await bob.insert({"job_type": "echo"}).select("id").execute()).data
        assert (await status_is(db, bobs["id"], "completed"))["attempts"] == 1
        for job in burst:  # the herald's one claim took the rest of Alice's burst
            assert (await status_is(db, job["id"], "completed"))["attempts"] == 1
