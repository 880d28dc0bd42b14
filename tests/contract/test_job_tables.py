import asyncpg
import pytest

from tests.support.contract import claim, enqueue, leases, rpc

pytestmark = pytest.mark.anyio

SHAPE = """
select column_name, data_type, is_nullable, column_default, is_identity
from information_schema.columns where table_schema = 'public' and table_name = $1
order by ordinal_position
"""


async def test_one_call_creates_a_job_table_of_the_same_shape(db: asyncpg.Connection):
    assert await db.fetchval("select reactor.create_job_table('emails')") == "emails"
    assert await db.fetch(SHAPE, "emails") == await db.fetch(SHAPE, "jobs")
    published = await db.fetch(
        "select tablename from pg_publication_tables where pubname = 'supabase_realtime' order by 1"
    )
    assert [r["tablename"] for r in published] == ["emails", "job_logs", "jobs"]
    assert await db.fetchval("select relrowsecurity from pg_class where oid = 'public.emails'::regclass")
    policies = await db.fetch("select policyname from pg_policies where tablename = 'emails' order by 1")
    assert [r["policyname"] for r in policies] == ["reactor_owner_inserts", "reactor_owner_reads"]


async def test_worker_functions_work_on_a_second_job_table(db: asyncpg.Connection):
    await db.execute("select reactor.create_job_table('emails')")
    await enqueue(db, "send", table="emails")
    [job] = await claim(db, ["send"], table="emails")
    report = await rpc(db, "reactor_complete", p_table="emails", p_jobs=leases([job], result=1))
    assert report["completed"] == [job["id"]]
    assert await claim(db, ["send"]) == []


async def test_every_job_table_gets_a_claim_function_only_the_worker_functions_can_call(
    db: asyncpg.Connection,
):
    await db.execute("select reactor.create_job_table('emails')")
    signature = "reactor.claim_due_{}(text, text[], integer, integer)"
    for table in ("jobs", "emails"):
        assert await db.fetchval("select to_regprocedure($1) is not null", signature.format(table))
        for role in ("anon", "authenticated", "service_role"):
            assert not await db.fetchval(
                "select has_function_privilege($1, $2, 'execute')", role, signature.format(table)
            )


async def test_creating_a_job_table_again_changes_nothing(db: asyncpg.Connection):
    await db.execute("select reactor.create_job_table('emails')")
    await enqueue(db, "send", table="emails")
    catalog = "select count(*) from pg_indexes where tablename = 'emails'"
    indexes = await db.fetchval(catalog)
    await db.execute("select reactor.create_job_table('emails')")
    assert await db.fetchval(catalog) == indexes
    assert await db.fetchval("select count(*) from public.emails") == 1


@pytest.mark.parametrize(
    "name",
    [
        "Emails",
        "1jobs",
        "jobs;drop table public.jobs",
        "a-b",
        "x" * 49,
        "",
        None,
        'e"vil',
        "public.x",
    ],
)
async def test_job_table_names_are_validated(db: asyncpg.Connection, name):
    with pytest.raises(asyncpg.RaiseError, match="invalid job table name"):
        await db.execute("select reactor.create_job_table($1)", name)
    assert await db.fetchval("select count(*) from reactor.job_tables") == 1


async def test_an_existing_table_is_not_taken_over(db: asyncpg.Connection):
    await db.execute("create table public.profiles (id int)")
    with pytest.raises(asyncpg.RaiseError, match="already exists and is not a reactor job table"):
        await db.execute("select reactor.create_job_table('profiles')")


async def test_claiming_uses_the_pending_index_among_many_finished_rows(db: asyncpg.Connection):
    await db.execute(
        "insert into public.jobs (job_type, status, completed_at) "
        "select 't', 'completed', now() from generate_series(1, 200000)"
    )
    await enqueue(db, "t", 10)
    await db.execute("analyze public.jobs")
    plan = "\n".join(
        r[0]
        for r in await db.fetch(
            "explain select id from public.jobs where status = 'pending' and run_at <= now() "
            "and job_type = any(array['t']) order by priority desc, run_at, id limit 10 "
            "for update skip locked"
        )
    )
    assert "jobs_claim_idx" in plan
    assert len(await claim(db, ["t"], limit=100)) == 10
