"""Webhooks on outcomes through pg_net (sql/migrations/0017): each job that finishes queues one
POST per matching webhook in the outcome's own transaction; a table without one pays nothing."""

import json
import uuid

import asyncpg
import pytest

from tests.support.contract import claim, enqueue, install_pg_net_stand_in, leases, rpc

pytestmark = pytest.mark.anyio

OWNER = str(uuid.uuid4())


async def posted(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("select url, body, headers, timeout_milliseconds from net.requests order by id")


async def test_without_pg_net_a_webhook_is_refused_with_what_to_enable(db):
    with pytest.raises(asyncpg.RaiseError, match="needs the pg_net extension") as caught:
        await db.execute("select reactor.add_webhook('crm', 'jobs', 'https://crm.example/hook')")
    assert caught.value.hint == "Enable it (Supabase: Database, Extensions, pg_net)."


async def test_each_outcome_is_posted_once_to_each_matching_webhook(db):
    await install_pg_net_stand_in(db)
    await db.execute(
        "select reactor.add_webhook('crm', 'jobs', 'https://crm.example/hook', 'sync',"
        ' p_headers => \'{"Authorization": "Bearer t0ken"}\', p_timeout_ms => 2000)'
    )
    await db.execute("select reactor.add_webhook('audit', 'jobs', 'https://audit.example/all')")
    await enqueue(db, "sync", user_id=OWNER)
    await enqueue(db, "other")
    jobs = await claim(db, ["sync", "other"], limit=2)
    sync = next(j for j in jobs if j["job_type"] == "sync")
    other = next(j for j in jobs if j["job_type"] == "other")
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([sync], result={"n": 3}))
    await rpc(db, "reactor_fail", p_table="jobs", p_jobs=leases([other], error="no", permanent=True))
    calls = await posted(db)
    assert [(c["url"], json.loads(c["body"])["id"]) for c in calls] == [
        ("https://audit.example/all", sync["id"]),
        ("https://crm.example/hook", sync["id"]),
        ("https://audit.example/all", other["id"]),
    ]
    body = json.loads(calls[1]["body"])
    assert {k: body[k] for k in ("table", "job_type", "status", "attempts", "result", "user_id")} == {
        "table": "jobs",
        "job_type": "sync",
        "status": "completed",
        "attempts": 1,
        "result": {"n": 3},
        "user_id": OWNER,
    }
    assert json.loads(calls[1]["headers"]) == {
        "Authorization": "Bearer t0ken",
        "Content-Type": "application/json",
    }
    assert calls[1]["timeout_milliseconds"] == 2000
    assert json.loads(calls[2]["body"])["last_error"] == "no"


async def test_a_retried_attempt_posts_nothing_and_a_rolled_back_outcome_posts_nothing(db):
    await install_pg_net_stand_in(db)
    await db.execute("select reactor.add_webhook('audit', 'jobs', 'https://audit.example/all')")
    await enqueue(db, "t", n=2)
    first, second = await claim(db, ["t"], limit=2)
    await rpc(db, "reactor_fail", p_table="jobs", p_jobs=leases([first], error="later"))
    transaction = db.transaction()
    await transaction.start()
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([second]))
    assert len(await posted(db)) == 1  # queued with the outcome, inside its transaction
    await transaction.rollback()
    assert await posted(db) == []


async def test_a_cancelled_job_is_posted_and_removing_the_last_webhook_drops_the_trigger(db):
    await install_pg_net_stand_in(db)
    await db.execute("select reactor.add_webhook('audit', 'jobs', 'https://audit.example/all')")
    [job_id] = await enqueue(db, "t")
    await rpc(db, "reactor_cancel", p_table="jobs", p_ids=[job_id])
    assert [json.loads(c["body"])["status"] for c in await posted(db)] == ["cancelled"]
    trigger = "select count(*) from pg_trigger where tgname = 'reactor_post_outcome'"
    assert await db.fetchval(trigger) == 1
    assert await db.fetchval("select reactor.remove_webhook('audit')") is True
    assert await db.fetchval("select reactor.remove_webhook('audit')") is False
    assert await db.fetchval(trigger) == 0


async def test_a_tables_trigger_stays_while_a_webhook_of_that_table_is_left(db):
    await install_pg_net_stand_in(db)
    await db.execute("select reactor.create_job_table('emails')")
    for name, table in (("audit", "jobs"), ("billing", "jobs"), ("mail", "emails")):
        await db.execute("select reactor.add_webhook($1, $2, 'https://hooks.example/x')", name, table)
    triggers = """
        select array_agg(c.relname::text order by c.relname) from pg_trigger t join pg_class c on c.oid = t.tgrelid
        where t.tgname = 'reactor_post_outcome'
    """
    await db.execute("select reactor.remove_webhook('audit')")
    assert await db.fetchval(triggers) == ["emails", "jobs"]  # billing is left on jobs
    await db.execute("select reactor.remove_webhook('billing')")
    assert await db.fetchval(triggers) == ["emails"]  # jobs has none left; emails keeps its own


@pytest.mark.parametrize(
    "call, problem",
    [
        ("select reactor.add_webhook('Bad Name', 'jobs', 'https://x.example')", "webhooks_name_check"),
        ("select reactor.add_webhook('a', 'jobs', 'ftp://x.example')", "webhooks_url_check"),
        ("select reactor.add_webhook('a', 'nope', 'https://x.example')", 'unknown job table "nope"'),
        (
            "select reactor.add_webhook('a', 'jobs', 'https://x.example', p_timeout_ms => 10)",
            "webhooks_timeout_ms_check",
        ),
        (
            "select reactor.add_webhook('a', 'jobs', 'https://x.example', p_headers => '[1]')",
            "webhooks_headers_check",
        ),
    ],
)
async def test_a_bad_webhook_is_refused_with_what_is_wrong(db, call, problem):
    await install_pg_net_stand_in(db)
    with pytest.raises(asyncpg.PostgresError, match=problem):
        await db.execute(call)
