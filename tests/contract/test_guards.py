"""Guard clauses of the contract that no other contract test reverses observably, each proved here
(found by tests/mutation/sql_guards.py; docs/reliability.md, "SQL guard clauses").

These run against the schema under test (tests/support/schema.py): sql/schema.sql, or the mutant a
mutation run names in REACTOR_TEST_SCHEMA_FILE.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from reactor import migrations
from reactor.devstack import database
from tests.support.contract import rpc
from tests.support.schema import schema_under_test

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def bootstrapped(server_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh database bootstrapped as Supabase, dropped afterwards."""
    name = f"reactor_guards_{uuid.uuid4().hex[:12]}"
    url = await database.create_database(server_url, name)
    try:
        await database.bootstrap(url)
        conn = await asyncpg.connect(url)
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await database.drop_database(server_url, name)


async def test_the_schema_refuses_a_project_with_an_earlier_contract(server_url: str):
    # tests/contract/test_schema.py proves this of sql/schema.sql in place; this of the schema under test.
    async with bootstrapped(server_url) as conn:
        for path in migrations.migration_files()[:-1]:
            await conn.execute(path.read_text())
        with pytest.raises(asyncpg.RaiseError, match="an earlier version of reactor's contract"):
            await conn.execute(schema_under_test())


async def test_the_schema_pasted_over_itself_is_accepted(server_url: str):
    async with bootstrapped(server_url) as conn:
        await conn.execute(schema_under_test())
        await conn.execute(schema_under_test())
        assert await conn.fetchval("select count(*) from reactor.schema_migrations") == len(
            migrations.migration_files()
        )


async def test_the_schema_pasted_again_restores_the_job_logs_policy_and_publication(server_url: str):
    # public.jobs has a policy of the same name and is in the same publication: the checks must
    # look at job_logs alone.
    async with bootstrapped(server_url) as conn:
        await conn.execute(schema_under_test())
        await conn.execute(
            "drop policy reactor_owner_reads on public.job_logs;"
            " alter publication supabase_realtime drop table public.job_logs"
        )
        await conn.execute(schema_under_test())
        assert (
            await conn.fetchval(
                "select count(*) from pg_policies where schemaname = 'public' and tablename = 'job_logs'"
                " and policyname = 'reactor_owner_reads'"
            )
            == 1
        )
        assert (
            await conn.fetchval(
                "select count(*) from pg_publication_tables where pubname = 'supabase_realtime'"
                " and schemaname = 'public' and tablename = 'job_logs'"
            )
            == 1
        )


async def test_statistics_count_each_status_and_each_kind_of_pending_job_apart(db: asyncpg.Connection):
    await db.execute(
        """
        insert into public.jobs (job_type, status, run_at, lease_expires_at) values
          ('a', 'pending', now() - interval '60 s', null), ('a', 'pending', now(), null),
          ('b', 'pending', now() + interval '1 hour', null),
          ('a', 'processing', now(), now() + interval '1 minute'),
          ('a', 'processing', now(), now() + interval '1 minute'),
          ('a', 'processing', now(), now() - interval '1 s'),
          ('a', 'waiting', now(), null),
          ('a', 'completed', now(), null),
          ('a', 'failed', now(), null), ('a', 'failed', now(), null),
          ('a', 'cancelled', now(), null),
          ('reactor.probe', 'cancelled', now(), null)
        """
    )
    await db.execute(
        "select public.reactor_set_limits('jobs', 'a', '{\"concurrency\": 5, \"rate\": 10, \"per_seconds\": 60}')"
    )
    await db.execute(  # two starts within the 60 s window, one before it
        "update reactor.job_limits set starts = array[now() - interval '2 minutes', now() - interval '10 s', now()]"
    )
    stats = await rpc(db, "reactor_stats", p_table="jobs")
    age = stats.pop("oldest_due_age_seconds")
    assert 60 <= age < 120
    assert stats == {
        "table": "jobs",
        "counts": {"pending": 3, "processing": 3, "waiting": 1, "completed": 1, "failed": 2, "cancelled": 1},
        "due": 2,
        "scheduled": 1,
        "pending_by_type": {"a": 2, "b": 1},
        "expired_leases": 1,
        "realtime": {"budget_per_second": 50, "withheld": 0},
        "limits": {
            "a": {
                "concurrency": 5,
                "rate": 10,
                "per_seconds": 60,
                "paused": False,
                "running": 3,
                "recent_starts": 2,
            }
        },
    }


INDEXES = """
select replace(indexdef, $1, 'T') as definition, indexrelid
from pg_indexes join pg_index on indexrelid = format('%I.%I', schemaname, indexname)::regclass
where schemaname = 'public' and tablename = $1 order by 1
"""


async def test_a_second_job_table_gets_every_index_of_the_first(db: asyncpg.Connection):
    await db.execute("select reactor.create_job_table('emails')")
    jobs = [r["definition"] for r in await db.fetch(INDEXES, "jobs")]
    assert [r["definition"] for r in await db.fetch(INDEXES, "emails")] == jobs
    assert [d.split(" ON ")[0] for d in jobs] == [
        "CREATE INDEX T_claim_idx",
        "CREATE INDEX T_failed_idx",
        "CREATE INDEX T_finished_idx",
        "CREATE INDEX T_lease_idx",
        "CREATE INDEX T_pending_user_idx",
        "CREATE INDEX T_unique_idx",
        "CREATE INDEX T_user_idx",
        "CREATE INDEX T_waiting_idx",
        "CREATE UNIQUE INDEX T_child_idx",
        "CREATE UNIQUE INDEX T_pkey",
    ]


async def test_creating_a_job_table_again_rebuilds_no_index(db: asyncpg.Connection):
    await db.execute("select reactor.create_job_table('emails')")
    before = await db.fetch(INDEXES, "emails")
    await db.execute("select reactor.create_job_table('emails')")
    assert await db.fetch(INDEXES, "emails") == before


@pytest.mark.parametrize("policy", ["reactor_owner_reads", "reactor_owner_inserts"])
async def test_creating_a_job_table_again_restores_a_dropped_policy(db: asyncpg.Connection, policy: str):
    await db.execute(f"drop policy {policy} on public.jobs")
    await db.execute("select reactor.create_job_table('jobs')")
    policies = await db.fetch("select policyname from pg_policies where tablename = 'jobs' order by 1")
    assert [r["policyname"] for r in policies] == ["reactor_owner_inserts", "reactor_owner_reads"]


async def test_the_overview_lists_the_tables_live_standbys_only(db: asyncpg.Connection):
    await db.execute("select reactor.create_job_table('emails')")
    await db.execute(
        """
        insert into reactor.standby (job_table, worker, job_types, slots, expires_at) values
          ('jobs', 'w1', array['a'], 3, now() + interval '1 hour'),
          ('jobs', 'w0', array['a'], 3, now() - interval '1 s'),
          ('emails', 'w2', array['a'], 3, now() + interval '1 hour')
        """
    )
    overview = await rpc(db, "reactor_overview", p_table="jobs")
    assert [(s["worker"], s["slots"]) for s in overview["standing_by"]] == [("w1", 3)]


async def test_the_overview_counts_small_statuses_exactly_and_estimates_the_growing_ones(
    db: asyncpg.Connection,
):
    await db.execute(
        """
        insert into public.jobs (job_type, status, run_at, lease_expires_at)
        select 'a', 'completed', now(), null from generate_series(1, 900);
        insert into public.jobs (job_type, status, run_at, lease_expires_at) values
          ('a', 'pending', now() - interval '60 s', null), ('a', 'pending', now() - interval '30 s', null),
          ('b', 'pending', now() + interval '1 hour', null),
          ('a', 'processing', now(), now() - interval '1 s'), ('a', 'waiting', now(), null),
          ('a', 'failed', now(), null), ('a', 'cancelled', now(), null),
          ('reactor.probe', 'cancelled', now(), null)
        """
    )
    before = await rpc(db, "reactor_overview", p_table="jobs")
    assert (before["counts"]["completed"], before["counts"]["cancelled"]) == (None, None)  # never analyzed
    await db.execute("analyze public.jobs")
    overview = await rpc(db, "reactor_overview", p_table="jobs")
    stats = await rpc(db, "reactor_stats", p_table="jobs")
    exact = ("pending", "processing", "waiting", "failed")
    assert {k: overview["counts"][k] for k in exact} == {k: stats["counts"][k] for k in exact}
    assert {k: overview["counts"][k] for k in exact} == {
        "pending": 3,
        "processing": 1,
        "waiting": 1,
        "failed": 1,
    }
    assert (overview["due"], overview["scheduled"]) == (2, 1)
    assert 60 <= overview["oldest_due_age_seconds"] < 120
    assert 850 <= overview["counts"]["completed"] <= 950  # the planner's estimate
    assert overview["estimated"] == ["completed", "cancelled"]
    for key in ("due", "scheduled", "pending_by_type", "expired_leases", "realtime", "limits"):
        assert overview[key] == stats[key], key
