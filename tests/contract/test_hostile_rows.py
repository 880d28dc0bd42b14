"""Every inserted row is hostile (sql/migrations/0008): the bounds every row obeys, the insert
policy for signed-in users, what owners may read and do, acting as PostgREST does for each role."""

import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.support.contract import acting_as, claim, enqueue, rpc

pytestmark = pytest.mark.anyio

ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())
DEEP = "[" * 34 + "]" * 34  # a value 33 levels below the top


async def insert_as_user(db: asyncpg.Connection, sub: str = ALICE, **columns) -> asyncpg.Record:
    columns = {"job_type": "t", **columns}
    names = ", ".join(columns)
    marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
    async with acting_as(db, "authenticated", sub):
        return await db.fetchrow(
            f"insert into public.jobs ({names}) values ({marks}) returning id, priority, run_at, now() as now",
            *columns.values(),
        )


@pytest.fixture
async def allowed(db: asyncpg.Connection) -> None:
    await db.execute("select reactor.allow_insert('jobs', 't', p_max_pending => 3, p_max_per_minute => 5)")


@pytest.mark.parametrize("run_at", ["-infinity", "infinity", "0044-03-15 BC", "1970-01-01", "4000-01-01"])
async def test_a_run_at_out_of_bounds_is_refused_for_every_role(db, run_at):
    with pytest.raises(asyncpg.CheckViolationError, match="jobs_run_at_bounds"):
        await db.execute(
            "insert into public.jobs (job_type, run_at) values ('t', $1::text::timestamptz)", run_at
        )


@pytest.mark.parametrize(
    "payload, message",
    [
        (DEEP, "payload is nested deeper than 32 levels"),
        (json.dumps({"x": "y" * 1_100_000}), "payload is 1100017 bytes; at most 1048576 are accepted"),
    ],
)
async def test_a_payload_out_of_bounds_is_refused_for_every_role(db, payload, message):
    with pytest.raises(asyncpg.PostgresError, match=message) as caught:
        await db.execute("insert into public.jobs (job_type, payload) values ('t', $1::jsonb)", payload)
    assert caught.value.sqlstate == "PT413"


async def test_a_payload_32_levels_deep_is_accepted(db):
    await db.execute(
        "insert into public.jobs (job_type, payload) values ('t', $1::jsonb)", "[" * 33 + "]" * 33
    )


async def test_rows_at_the_bounds_keep_stats_and_ticks_working(db):
    await enqueue(db, "t", run_at=datetime(2000, 1, 1, tzinfo=UTC))
    await enqueue(db, "t", run_at=datetime(2199, 12, 31, tzinfo=UTC))
    await enqueue(db, "other", run_at=datetime(2000, 1, 1, tzinfo=UTC))
    async with acting_as(db, "service_role"):
        stats = await rpc(db, "reactor_stats", p_table="jobs")
        tick = json.loads(
            await db.fetchval("select public.reactor_tick('jobs', 'w', array['t'], 5, 60, true)")
        )
    assert stats["counts"]["pending"] == 3 and stats["oldest_due_age_seconds"] > 0
    assert len(tick["claimed"]) == 1 and tick["next_due_seconds"] > 0


async def test_the_guard_brings_rows_from_before_it_inside_the_bounds(db):
    await db.execute("alter table public.jobs drop constraint jobs_run_at_bounds")
    await db.execute("alter table public.jobs disable trigger zz_reactor_hand_off")
    insert = "insert into public.jobs (job_type, run_at) values ('t', $1::text::timestamptz) returning id"
    early = await db.fetchval(insert, "-infinity")
    late = await db.fetchval(insert, "infinity")
    deep = await db.fetchval(
        "insert into public.jobs (job_type, payload) values ('t', $1::jsonb) returning id", DEEP
    )
    await db.execute("alter table public.jobs enable trigger zz_reactor_hand_off")
    await db.execute("select reactor.guard_job_table('jobs')")
    rows = {
        r["id"]: r
        for r in await db.fetch("select id, run_at::text, status, last_error, payload from public.jobs")
    }
    assert rows[early]["run_at"] == "2000-01-01 00:00:00+00"
    assert rows[late]["run_at"] == "2199-12-31 00:00:00+00"
    assert rows[deep]["status"] == "failed"
    assert rows[deep]["last_error"] == "refused: payload is nested deeper than 32 levels"
    assert rows[deep]["payload"] == DEEP  # kept, for whoever looks into it
    async with acting_as(db, "service_role"):
        assert await rpc(db, "reactor_stats", p_table="jobs")
    assert await db.fetchval("select count(*) from pg_constraint where conname = 'jobs_run_at_bounds'") == 1


async def test_a_job_type_no_rule_allows_is_refused_by_name(db):
    with pytest.raises(
        asyncpg.InsufficientPrivilegeError, match='job type "t" may not be inserted into jobs'
    ) as caught:
        await insert_as_user(db)
    assert caught.value.hint == "An operator allows it with: select reactor.allow_insert('jobs', 't');"


async def test_reactors_own_job_types_cannot_be_allowed(db):
    with pytest.raises(asyncpg.RaiseError, match=r'starting with "reactor\." are reactor'):
        await db.execute("select reactor.allow_insert('jobs', 'reactor.probe')")


@pytest.mark.parametrize(
    "columns, message, sqlstate",
    [
        (
            {"priority": 2147483647},
            'priority 2147483647 is above the highest allowed for job type "t" \\(0\\)',
            "PT400",
        ),
        (
            {"payload": json.dumps({"x": "y" * 70000})},
            'payload is 70017 bytes; job type "t" accepts at most 65536',
            "PT413",
        ),
    ],
)
async def test_a_user_asking_for_more_than_the_rule_is_refused_by_name(
    db, allowed, columns, message, sqlstate
):
    with pytest.raises(asyncpg.PostgresError, match=message) as caught:
        await insert_as_user(db, **columns)
    assert caught.value.sqlstate == sqlstate


async def test_a_user_cannot_schedule_further_ahead_than_the_rule(db, allowed):
    with pytest.raises(asyncpg.PostgresError, match="is more than 2592000 seconds ahead"):
        async with acting_as(db, "authenticated", ALICE):
            await db.execute(
                "insert into public.jobs (job_type, run_at) values ('t', now() + interval '31 days')"
            )


async def test_a_run_at_in_the_past_is_moved_to_now_so_it_cannot_jump_the_queue(db, allowed):
    async with acting_as(db, "authenticated", ALICE):
        job = await db.fetchrow(
            "insert into public.jobs (job_type, run_at) values ('t', '2001-01-01') returning run_at, now() as now"
        )
    assert job["run_at"] == job["now"]


async def test_max_attempts_above_the_rule_is_lowered_to_it(db):
    await db.execute("select reactor.allow_insert('jobs', 't', p_max_attempts => 3)")
    async with acting_as(db, "authenticated", ALICE):
        limits = await db.fetch(
            "insert into public.jobs (job_type, max_attempts) values ('t', 1000), ('t', 2), ('t', default) "
            "returning max_attempts"
        )
    assert [r["max_attempts"] for r in limits] == [3, 2, 3]


async def test_a_user_over_their_pending_limit_is_told_to_wait(db, allowed):
    for _ in range(3):
        await insert_as_user(db)
    await insert_as_user(db, BOB)  # another user's jobs are theirs alone
    with pytest.raises(
        asyncpg.PostgresError, match='you already have 3 jobs of type "t" waiting, the most allowed'
    ) as caught:
        await insert_as_user(db)
    assert caught.value.sqlstate == "PT429"
    async with acting_as(db, "service_role"):
        await claim(db, ["t"], limit=1)
    await insert_as_user(db)  # a job that started no longer waits
    with pytest.raises(asyncpg.PostgresError, match="waiting, the most allowed"):
        await insert_as_user(db)


async def test_a_user_over_their_inserts_a_minute_is_told_to_wait(db, allowed):
    for _ in range(3):
        await insert_as_user(db)
    await db.execute("update public.jobs set status = 'completed'")
    for _ in range(2):
        await insert_as_user(db)
    with pytest.raises(
        asyncpg.PostgresError, match='you inserted 5 jobs of type "t" in the last minute'
    ) as caught:
        await insert_as_user(db)
    assert caught.value.sqlstate == "PT429"
    await db.execute("update public.jobs set created_at = now() - interval '61 seconds'")
    await insert_as_user(db)


async def test_operators_and_the_service_role_are_not_bound_by_the_policy(db):
    await enqueue(db, "unlisted", priority=1000, max_attempts=1000, run_at=datetime(2001, 1, 1, tzinfo=UTC))
    async with acting_as(db, "service_role"):
        await db.execute("insert into public.jobs (job_type, priority) values ('unlisted', 99)")
    assert await db.fetchval("select count(*) from public.jobs where job_type = 'unlisted'") == 2


async def test_a_priority_the_project_derives_in_its_own_trigger_is_checked_against_the_rule(db):
    await db.execute("""
        create function public.plan_priority() returns trigger language plpgsql as $$
        begin new.priority := 10; return new; end $$;
        create trigger plan_priority before insert on public.jobs for each row execute function public.plan_priority();
    """)
    await db.execute("select reactor.allow_insert('jobs', 't', p_max_priority => 10)")
    assert (await insert_as_user(db, priority=0))["priority"] == 10
    await db.execute("select reactor.allow_insert('jobs', 't', p_max_priority => 5)")
    with pytest.raises(asyncpg.PostgresError, match="priority 10 is above the highest allowed"):
        await insert_as_user(db)


async def test_forbidding_a_type_again_refuses_it(db, allowed):
    await insert_as_user(db)
    assert await db.fetchval("select reactor.forbid_insert('jobs', 't')") is True
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await insert_as_user(db)


async def test_owners_read_only_the_columns_meant_for_them(db, allowed):
    job = await insert_as_user(db)
    async with acting_as(db, "service_role"):
        await claim(db, ["t"], worker="host-123")
    async with acting_as(db, "authenticated", ALICE):
        seen = await db.fetchrow("select id, status, attempts, progress, result, last_error from public.jobs")
    assert (seen["id"], seen["status"]) == (job["id"], "processing")
    for column in ("lease_token", "locked_by", "lease_expires_at"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with acting_as(db, "authenticated", ALICE):
                await db.fetch(f"select {column} from public.jobs")


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_api_roles_cannot_touch_the_sequences(db, role):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with acting_as(db, role, ALICE if role == "authenticated" else None):
            await db.execute("select setval('public.jobs_id_seq', 9223372036854775807)")


async def test_an_owner_cancels_their_own_pending_or_running_job_and_nothing_else(db, allowed):
    mine = (await insert_as_user(db))["id"]
    running = (await insert_as_user(db))["id"]
    theirs = (await insert_as_user(db, BOB))["id"]
    async with acting_as(db, "service_role"):
        await db.execute(
            "update public.jobs set status = 'processing', locked_by = 'w1' where id = $1", running
        )
    async with acting_as(db, "authenticated", ALICE):
        assert await rpc(db, "reactor_cancel_own", p_table="jobs", p_id=mine) == {
            "id": mine,
            "cancelled": True,
            "status": "cancelled",
        }
        assert await db.fetchval("select status from public.jobs where id = $1", running) == "processing"
        assert await rpc(db, "reactor_cancel_own", p_table="jobs", p_id=running) == {
            "id": running,
            "cancelled": True,
            "status": "cancelled",
        }
    # Only the running job's worker is told, by a cancel signal naming it.
    signals = await db.fetch(
        "select locked_by, payload from public.jobs where job_type = 'reactor.probe' order by id"
    )
    assert [(r["locked_by"], json.loads(r["payload"])) for r in signals] == [
        ("w1", {"worker": "w1", "cancel": running})
    ]
    for job_id in (theirs, 10**12):
        with pytest.raises(asyncpg.PostgresError, match=f"job {job_id} not found in jobs") as caught:
            async with acting_as(db, "authenticated", ALICE):
                await rpc(db, "reactor_cancel_own", p_table="jobs", p_id=job_id)
        assert caught.value.sqlstate == "PT404"
    assert await db.fetchval("select status from public.jobs where id = $1", theirs) == "pending"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with acting_as(db, "anon"):
            await rpc(db, "reactor_cancel_own", p_table="jobs", p_id=mine)


async def test_an_owner_cancelling_their_finished_job_is_told_its_status_and_nothing_changes(db, allowed):
    done = (await insert_as_user(db))["id"]
    async with acting_as(db, "service_role"):
        await db.execute(
            "update public.jobs set status = 'completed', completed_at = now() where id = $1", done
        )
    async with acting_as(db, "authenticated", ALICE):
        answer = await rpc(db, "reactor_cancel_own", p_table="jobs", p_id=done)
    assert answer == {"id": done, "cancelled": False, "status": "completed"}
    assert await db.fetchval("select status from public.jobs where id = $1", done) == "completed"


async def test_a_tick_deletes_standby_rows_that_expired_a_minute_ago(db):
    await db.execute("""
        insert into reactor.standby (job_table, worker, job_types, slots, expires_at)
        select 'jobs', 'dead-' || g, array['t'], 16, now() - interval '2 minutes' from generate_series(1, 500) g
        union all select 'jobs', 'just-lapsed', array['t'], 16, now() - interval '10 seconds'
    """)
    async with acting_as(db, "service_role"):
        await db.execute("select public.reactor_tick('jobs', 'w', array['t'], 1)")
    assert [r["worker"] for r in await db.fetch("select worker from reactor.standby")] == ["just-lapsed"]


async def test_a_retry_time_out_of_bounds_is_kept_inside_them(db):
    await enqueue(db, "t")
    async with acting_as(db, "service_role"):
        [job] = await claim(db, ["t"])
        await rpc(
            db,
            "reactor_fail",
            p_table="jobs",
            p_jobs=[
                {
                    "id": job["id"],
                    "lease_token": str(job["lease_token"]),
                    "error": "x",
                    "retry_at": "9999-01-01T00:00:00Z",
                }
            ],
        )
    assert str(await db.fetchval("select run_at::text from public.jobs")) == "2199-12-31 00:00:00+00"
