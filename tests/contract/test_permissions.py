"""The permission matrix, acting as PostgREST does for each role (see tests/support/contract.py)."""

import json
import uuid

import asyncpg
import pytest

from tests.support.contract import acting_as, claim, enqueue, leases

pytestmark = pytest.mark.anyio

ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())
DENIED = asyncpg.InsufficientPrivilegeError

WORKER_CALLS = [
    "select * from public.reactor_claim('jobs', 'w', array['t'], 10, 60)",
    "select public.reactor_heartbeat('jobs', '[]', 60)",
    "select public.reactor_complete('jobs', '[]')",
    "select public.reactor_fail('jobs', '[]')",
    "select public.reactor_release('jobs', '[]')",
    "select public.reactor_progress('jobs', 1, gen_random_uuid(), 1, null)",
    "select public.reactor_reap('jobs', 10)",
    "select public.reactor_stats('jobs')",
    "select public.reactor_overview('jobs')",
    "select public.reactor_retry('jobs', null, null, 10)",
    "select public.reactor_cancel('jobs', array[1::bigint])",
    "select public.reactor_prune('jobs', 0, 10)",
    "select public.reactor_tick('jobs', 'w', array['t'], 10, 60, true, true, null)",
    "select * from public.reactor_claim('jobs', 'w', array['t'], 10, 60, 30)",
    "select public.reactor_claim_batch('jobs', 'w', array['t'], 10, 60, 30)",
    "select public.reactor_claim_jobs('jobs', 'w', array['t'], 10, 60, 30)",
    "select public.reactor_stand_down('jobs', 'w')",
    "select public.reactor_snooze('jobs', '[]')",
    'select public.reactor_spawn(\'jobs\', 1, gen_random_uuid(), \'[{"job_type": "t", "key": "k"}]\')',
    "select public.reactor_wait('jobs', '[]')",
    "select public.reactor_children('jobs', 1)",
    'select public.reactor_log(\'jobs\', \'[{"id": 1, "lease_token": "00000000-0000-4000-8000-000000000001", "level": "info", "message": "m"}]\')',
    "select reactor.claim('jobs', 'w', array['t'], 10, 60, 30)",
    "select public.reactor_set_limits('jobs', 't', '{\"concurrency\": 1}')",
    "select public.reactor_declare_limits('jobs', '{}')",
    "select public.reactor_limits('jobs')",
    "select * from reactor.job_limits",
    "select * from reactor.realtime_budget",
    "select public.reactor_fire_schedules('w', '{\"jobs\": [\"t\"]}', '[]', '[]')",
    "select public.reactor_schedules(null)",
    "select reactor.create_job_table('x')",
    "select * from reactor.job_tables",
    "select * from reactor.standby",
    "select reactor.stand_by('jobs', 'w', array['t'], 10, 30, true)",
    "select reactor.stand_by('jobs', 'w', array['t'], 10, 30, true, 0)",
    "select public.reactor_claim_jobs('jobs', 'w', array['t'], 10, 60, 30, 0)",
    "select reactor.claim_and_stand_by('jobs', 'w', array['t'], 10, 60, 30, 0)",
    "select reactor.allow_insert('jobs', 't', 1000)",
    "select reactor.forbid_insert('jobs', 't')",
    "select * from reactor.insert_rules",
    "select reactor.guard_job_table('jobs')",
    "select reactor.schedule('s', '* * * * *', 'jobs', 't')",
    "select reactor.unschedule('s')",
    "select reactor.fire_schedule('s')",
    "select * from reactor.schedules",
    "select reactor.add_webhook('a', 'jobs', 'https://x.example')",
    "select reactor.remove_webhook('a')",
    "select * from reactor.webhooks",
    "select reactor.set_unique_window('jobs', 't', 60)",
    "select * from reactor.unique_windows",
    "select public.reactor_worker_topic('w')",
    "select reactor.worker_topic('w')",
    "select * from reactor.topic_key",
]


async def test_the_matrix_covers_every_entry_point(db):
    """A new public.reactor_* function is refused to the API roles only if it is listed above."""
    names = await db.fetch(
        "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and p.proname like 'reactor\\_%'"
    )
    listed = " ".join(WORKER_CALLS)
    assert sorted(r["proname"] for r in names if f"public.{r['proname']}(" not in listed) == [
        "reactor_cancel_own"
    ]


@pytest.fixture
async def owned_jobs(db: asyncpg.Connection) -> dict[str, int]:
    [alice_job] = await enqueue(db, "t", user_id=ALICE)
    [bob_job] = await enqueue(db, "t", user_id=BOB)
    return {"alice": alice_job, "bob": bob_job}


@pytest.mark.parametrize("role,sub", [("anon", None), ("authenticated", ALICE)])
@pytest.mark.parametrize("sql", WORKER_CALLS)
async def test_api_roles_cannot_run_worker_functions(db, role, sub, sql):
    with pytest.raises(DENIED):
        async with acting_as(db, role, sub):
            await db.execute(sql)


async def test_service_role_runs_every_worker_function(db, owned_jobs):
    async with acting_as(db, "service_role"):
        for sql in WORKER_CALLS:
            if " public.reactor_" in sql:  # reactor's own schema is for operators alone
                await db.execute(sql)


async def test_only_signed_in_users_may_cancel_their_own_jobs(db, owned_jobs):
    with pytest.raises(DENIED):
        async with acting_as(db, "anon"):
            await db.execute("select public.reactor_cancel_own('jobs', $1)", owned_jobs["alice"])
    async with acting_as(db, "authenticated", ALICE):
        await db.execute("select public.reactor_cancel_own('jobs', $1)", owned_jobs["alice"])
    with pytest.raises(DENIED):  # no user: the service role has the operator's reactor_cancel
        async with acting_as(db, "service_role"):
            await db.execute("select public.reactor_cancel_own('jobs', $1)", owned_jobs["bob"])


async def test_anon_can_neither_read_nor_insert_jobs(db, owned_jobs):
    with pytest.raises(DENIED):
        async with acting_as(db, "anon"):
            await db.fetch("select * from public.jobs")
    with pytest.raises(DENIED):
        async with acting_as(db, "anon"):
            await db.execute("insert into public.jobs (job_type) values ('t')")


async def test_a_user_reads_only_their_own_jobs(db, owned_jobs):
    async with acting_as(db, "authenticated", ALICE):
        rows = await db.fetch("select id, status, progress from public.jobs")
    assert [r["id"] for r in rows] == [owned_jobs["alice"]]
    async with acting_as(db, "authenticated", BOB):
        rows = await db.fetch("select id from public.jobs")
    assert [r["id"] for r in rows] == [owned_jobs["bob"]]


async def test_a_user_inserts_a_job_owned_by_them(db):
    await db.execute("select reactor.allow_insert('jobs', 't', p_max_priority => 5)")
    async with acting_as(db, "authenticated", ALICE):
        job = await db.fetchrow(
            "insert into public.jobs (job_type, payload, priority) values ('t', $1, 5) "
            "returning id, user_id, status",
            json.dumps({"k": 1}),
        )
    assert (str(job["user_id"]), job["status"]) == (ALICE, "pending")


async def test_a_user_cannot_insert_a_job_for_someone_else(db):
    await db.execute("select reactor.allow_insert('jobs', 't')")
    with pytest.raises(DENIED, match="row-level security"):
        async with acting_as(db, "authenticated", ALICE):
            await db.execute("insert into public.jobs (job_type, user_id) values ('t', $1)", uuid.UUID(BOB))


@pytest.mark.parametrize(
    "column,value",
    [
        ("status", "'completed'"),
        ("attempts", "0"),
        ("result", "'{}'::jsonb"),
        ("lease_token", "gen_random_uuid()"),
        ("locked_by", "'me'"),
    ],
)
async def test_a_user_cannot_write_worker_owned_columns(db, column, value):
    with pytest.raises(DENIED):
        async with acting_as(db, "authenticated", ALICE):
            await db.execute(f"insert into public.jobs (job_type, {column}) values ('t', {value})")


@pytest.mark.parametrize(
    "sql",
    [
        "update public.jobs set status = 'completed'",
        "update public.jobs set priority = 100",
        "delete from public.jobs",
    ],
)
async def test_a_user_can_neither_update_nor_delete_jobs(db, owned_jobs, sql):
    with pytest.raises(DENIED):
        async with acting_as(db, "authenticated", ALICE):
            await db.execute(sql)


async def test_service_role_sees_and_works_every_job(db, owned_jobs):
    async with acting_as(db, "service_role"):
        assert await db.fetchval("select count(*) from public.jobs") == 2
        jobs = await claim(db, ["t"], limit=5)
        report = await db.fetchval(
            "select public.reactor_complete('jobs', $1)", json.dumps(leases(jobs, result=None))
        )
    assert sorted(json.loads(report)["completed"]) == sorted(owned_jobs.values())
