"""The operator commands, run as `reactor …` subprocesses against the local stack, checked in Postgres."""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import pytest
from aiohttp import web

from reactor.devstack.stack import Stack
from tests.support.worker import insert, row, worker_env

pytestmark = pytest.mark.anyio


@dataclass
class Outcome:
    code: int
    out: str
    err: str


async def reactor(env: dict[str, str], *args: str) -> Outcome:
    done = await anyio.run_process([sys.executable, "-m", "reactor.cli", *args], env=env, check=False)
    return Outcome(done.returncode, done.stdout.decode(), done.stderr.decode())


async def ok(stack: Stack, *args: str) -> str:
    done = await reactor(worker_env(stack), *args)
    assert done.code == 0, done.err
    return done.out


async def test_enqueue_prints_the_id_of_a_pending_job_with_the_given_options(
    stack: Stack, db: asyncpg.Connection
):
    out = await ok(
        stack, "enqueue", "send_email", "--payload", '{"to": "ada@example.com"}', "--priority", "7",
        "--run-at", "2030-01-31T09:00:00+01:00", "--max-attempts", "3",
    )  # fmt: skip
    job = await row(db, int(out))
    assert job["status"] == "pending" and job["job_type"] == "send_email"
    assert json.loads(job["payload"]) == {"to": "ada@example.com"}
    assert (job["priority"], job["max_attempts"]) == (7, 3)
    assert job["run_at"] == datetime(2030, 1, 31, 8, tzinfo=UTC)


async def test_enqueue_defaults_to_an_empty_payload_due_now(stack: Stack, db: asyncpg.Connection):
    job = await row(db, int(await ok(stack, "enqueue", "tick")))
    assert json.loads(job["payload"]) == {} and job["max_attempts"] == 5
    assert job["run_at"] <= await db.fetchval("select now()")


async def test_enqueue_goes_to_the_table_named_by_the_option_or_reactor_table(
    stack: Stack, db: asyncpg.Connection
):
    await db.execute("select reactor.create_job_table('emails')")
    first = int(await ok(stack, "enqueue", "send_email", "--table", "emails"))
    done = await reactor(worker_env(stack, REACTOR_TABLE="emails"), "enqueue", "send_email")
    assert done.code == 0, done.err
    assert await db.fetchval("select array_agg(id order by id) from public.emails") == [first, int(done.out)]
    assert await db.fetchval("select count(*) from public.jobs") == 0


async def test_stats_shows_counts_per_table_as_a_table_and_as_json(stack: Stack, db: asyncpg.Connection):
    await db.execute("select reactor.create_job_table('emails')")
    for _ in range(3):
        await insert(db, "send_email")
    await insert(db, "resize", run_at=datetime.now(UTC) + timedelta(hours=1))
    await insert(db, "resize", status="failed", attempts=5)
    await insert(db, "send_email", table="emails", status="completed", attempts=1)

    text = await ok(stack, "stats", "--table", "jobs", "--table", "emails")
    lines = text.splitlines()
    assert lines[0].split() == [
        "table", "pending", "processing", "waiting", "completed", "failed", "cancelled", "due", "scheduled",
        "oldest", "due", "expired", "leases",
    ]  # fmt: skip
    jobs = lines[1].split()  # the oldest due job's age, e.g. "0.4 s", is two cells
    assert jobs[:9] == ["jobs", "4", "0", "0", "0", "1", "0", "3", "1"] and jobs[10:] == ["s", "0"]
    assert lines[2].split() == ["emails", "0", "0", "0", "1", "0", "0", "0", "0", "-", "0"]
    assert "pending in jobs by type: resize 1, send_email 3" in lines
    assert lines[-1] == "Realtime budget: 50 messages a second; 0 insert(s) withheld for it in all"

    found = json.loads(await ok(stack, "stats", "--json"))
    assert list(found) == ["jobs"]
    assert found["jobs"]["counts"] == {
        "pending": 4,
        "processing": 0,
        "waiting": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert (found["jobs"]["due"], found["jobs"]["scheduled"]) == (3, 1)
    assert found["jobs"]["pending_by_type"] == {"send_email": 3, "resize": 1}


async def test_retry_puts_failed_jobs_back_to_pending_by_id_or_by_type(stack: Stack, db: asyncpg.Connection):
    a = await insert(db, "send_email", status="failed", attempts=5, last_error="boom")
    b = await insert(db, "send_email", status="failed", attempts=5)
    c = await insert(db, "resize", status="failed", attempts=5)
    done = await insert(db, "send_email", status="completed", attempts=1)

    assert await ok(stack, "retry", str(a)) == f"retried 1 job(s): {a}\n"
    assert ((await row(db, a))["status"], (await row(db, a))["attempts"]) == ("pending", 0)
    assert (await row(db, b))["status"] == "failed"

    assert await ok(stack, "retry", "--type", "resize") == f"retried 1 job(s): {c}\n"
    assert await ok(stack, "retry") == f"retried 1 job(s): {b}\n"
    assert await ok(stack, "retry") == "retried 0 job(s)\n"
    assert (await row(db, done))["status"] == "completed"


async def test_cancel_cancels_pending_and_running_jobs_and_names_the_ones_it_left_alone(
    stack: Stack, db: asyncpg.Connection
):
    pending = await insert(db, "send_email")
    running = await insert(db, "send_email", status="processing", attempts=1)
    done = await insert(db, "send_email", status="completed", attempts=1)
    out = await ok(stack, "cancel", str(pending), str(running), str(done), "999999")
    assert out.splitlines() == [
        f"cancelled 2 job(s): {pending}, {running}",
        f"left 2 job(s) alone, finished or not found: {done}, 999999",
    ]
    assert (await row(db, pending))["status"] == "cancelled"
    assert (await row(db, running))["status"] == "cancelled"
    assert (await row(db, done))["status"] == "completed"


async def test_prune_deletes_only_finished_jobs_older_than_the_cutoff(stack: Stack, db: asyncpg.Connection):
    now = datetime.now(UTC)
    old = [
        await insert(db, "t", status=status, attempts=1, completed_at=now - timedelta(days=8))
        for status in ("completed", "failed", "cancelled")
    ]
    recent = await insert(db, "t", status="completed", attempts=1, completed_at=now - timedelta(hours=1))
    pending = await insert(db, "t", created_at=now - timedelta(days=30))

    assert await ok(stack, "prune", "--older-than", "7d") == "pruned 3 job(s) finished more than 7d ago\n"
    assert await db.fetchval("select array_agg(id order by id) from public.jobs") == [recent, pending]
    assert not set(old) & set(await db.fetchval("select array_agg(id) from public.jobs"))
    assert await ok(stack, "prune", "--older-than", "30m") == "pruned 1 job(s) finished more than 30m ago\n"


@pytest.mark.parametrize(
    "args, problem",
    [
        (["enqueue", "t", "--payload", "{to: 1}"], "reactor enqueue: --payload is not valid JSON: "),
        (["enqueue", "t", "--table", "nope"], "reactor enqueue: post nope: "),
        (
            ["enqueue", "t", "--table", "Bad-Name"],
            "reactor enqueue: --table 'Bad-Name' is not a job table name",
        ),
        (["enqueue", "t", "--run-at", "tomorrow"], "reactor enqueue: --run-at 'tomorrow' is not an ISO 8601"),
        (
            ["enqueue", "t", "--max-attempts", "0"],
            "reactor enqueue: --max-attempts must be between 1 and 1000",
        ),
        (["enqueue", "t", "--priority", "high"], "reactor enqueue: --priority 'high' is not a whole number"),
        (["enqueue", ""], "reactor enqueue: TYPE, the job type, must be 1 to 200 characters"),
        (["stats", "--table", "nope"], 'reactor stats: reactor_stats: unknown job table "nope"'),
        (["prune", "--older-than", "7 days"], "reactor prune: --older-than '7 days' is not a duration"),
        (["prune", "--older-than", "100y"], "reactor prune: --older-than '100y' is not a duration"),
        (["prune", "--older-than", "999999w"], "reactor prune: --older-than '999999w' is too long"),
        (["cancel", "x"], "reactor cancel: job id 'x' is not a whole number"),
        (["retry", "--limit", "5000"], "reactor retry: --limit must be between 1 and 1000"),
    ],
)
async def test_bad_input_gets_one_line_naming_it_and_changes_nothing(
    stack: Stack, db: asyncpg.Connection, args: list[str], problem: str
):
    job = await insert(db, "t", status="failed", attempts=5)
    done = await reactor(worker_env(stack), *args)
    assert done.code != 0 and done.out == ""
    assert len(done.err.splitlines()) == 1 and done.err.startswith(problem), done.err
    assert stack.keys.service_role not in done.err
    assert await db.fetchval("select array_agg(status) from public.jobs") == ["failed"]
    assert (await row(db, job))["attempts"] == 5


async def test_a_wrong_key_is_named_without_showing_any_key(stack: Stack, db: asyncpg.Connection):
    wrong = stack.keys.anon
    done = await reactor(worker_env(stack, SUPABASE_SERVICE_ROLE_KEY=wrong), "enqueue", "t")
    assert done.code == 1 and len(done.err.splitlines()) == 1
    assert done.err.startswith("reactor enqueue: post jobs: ") and "HTTP 401" in done.err, done.err
    assert done.err.endswith(": is the key in SUPABASE_SERVICE_ROLE_KEY the project's service-role key?\n")
    assert wrong not in done.err and stack.keys.service_role not in done.err
    assert await db.fetchval("select count(*) from public.jobs") == 0

    done = await reactor(worker_env(stack, SUPABASE_SERVICE_ROLE_KEY="not-a-jwt"), "stats")
    assert done.code == 1 and done.err.startswith("reactor stats: reactor_stats: ") and "HTTP 401" in done.err
    assert "not-a-jwt" not in done.err


async def test_enqueue_into_a_table_that_does_not_exist_says_how_to_create_one(stack: Stack):
    done = await reactor(worker_env(stack), "enqueue", "t", "--table", "nope")
    assert done.code == 2 and done.err.endswith(
        "(HTTP 404): is 'nope' a job table? Create one with select reactor.create_job_table('nope');\n"
    ), done.err


async def test_a_url_that_is_not_the_supabase_api_is_named(stack: Stack):
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html>a web site</html>", content_type="text/html")

    site = web.Application()
    site.router.add_route("*", "/{tail:.*}", page)
    runner = web.AppRunner(site)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        done = await reactor(worker_env(stack, SUPABASE_URL=url), "stats")
    finally:
        await runner.cleanup()
    assert done.code == 1 and done.err == f"reactor stats: {url} did not answer as the Supabase API\n"


async def test_an_unreachable_api_or_missing_settings_are_named(stack: Stack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    done = await reactor(worker_env(stack, SUPABASE_URL=closed), "stats")
    assert done.code == 1 and len(done.err.splitlines()) == 1
    assert done.err.startswith("reactor stats: reactor_stats: cannot reach the API: ConnectError"), done.err
    assert stack.keys.service_role not in done.err

    env = {k: v for k, v in worker_env(stack).items() if not k.startswith("SUPABASE_")}
    done = await reactor(env, "stats")
    assert done.code == 2 and done.err.splitlines() == [
        "reactor stats: SUPABASE_URL is not set: give an http:// or https:// URL of the Supabase project",
        "reactor stats: SUPABASE_SERVICE_ROLE_KEY is not set: give the project's service-role key",
    ]


async def test_limit_pause_resume_and_limits_change_what_every_worker_may_claim(
    stack: Stack, db: asyncpg.Connection
):
    assert await ok(stack, "limits") == "no limits in jobs\n"
    assert await ok(stack, "limit", "quote", "--rate", "2/s", "--concurrency", "3") == (
        "jobs quote: concurrency 3, rate 2 per 1 s\n"
    )
    assert await ok(stack, "limit", "quote", "--per-user", "1", "--concurrency", "none") == (
        "jobs quote: rate 2 per 1 s, per user 1\n"
    )
    assert await ok(stack, "pause", "quote") == "jobs quote: rate 2 per 1 s, per user 1, paused\n"
    assert "limits: jobs quote: rate 2 per 1 s, per user 1, paused" in (await ok(stack, "stats")).splitlines()
    row = await db.fetchrow("select * from reactor.job_limits where job_type = 'quote'")
    assert (row["concurrency"], row["rate"], row["per_seconds"], row["per_user"], row["paused"]) == (
        None,
        2,
        1,
        1,
        True,
    )
    await ok(stack, "resume", "quote")
    assert await ok(stack, "limits") == "jobs quote: rate 2 per 1 s, per user 1\n"
    await ok(stack, "limit", "quote", "--rate", "none", "--per-user", "none")
    assert await ok(stack, "limits") == "no limits in jobs\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (["limit", "quote"], "give --concurrency, --rate or --per-user (none clears one)"),
        (["limit", "quote", "--rate", "fast"], "rate 'fast' is not a rate"),
        (["limit", "quote", "--concurrency", "-1"], "p_limits"),
    ],
)
async def test_a_bad_limit_is_refused_in_one_line(stack: Stack, args: list[str], message: str):
    done = await reactor(worker_env(stack), *args)
    assert done.code == 2 and message in done.err and len(done.err.splitlines()) == 1, done.err


async def test_stats_lists_each_tables_schedules_with_next_and_last_run(stack: Stack, db: asyncpg.Connection):
    await db.execute(
        "select reactor.schedule('nightly-prune', '0 3 * * *', 'jobs', 'prune', p_time_zone => 'Europe/Berlin')"
    )
    await db.execute("select reactor.schedule('every-minute', '* * * * *', 'jobs', 'report')")
    await db.execute(
        "update reactor.schedules set last_run_at = '2030-01-01 02:00:00+00', fired_through = now() - interval '1 h'"
        " where name = 'every-minute'"
    )
    text = await ok(stack, "stats")
    lines = text.splitlines()
    start = lines.index("schedules in jobs:")
    assert lines[start + 1].split() == [
        "name",
        "cron",
        "zone",
        "job",
        "type",
        "next",
        "run",
        "last",
        "run",
        "engine",
    ]
    every, nightly = lines[start + 2].split(), lines[start + 3].split()
    # Not fired for an hour, while its catch-up window is an hour: no worker fires it.
    assert every[:7] == ["every-minute", "*", "*", "*", "*", "*", "UTC"] and "(overdue)" in every
    assert every[-3:] == ["2030-01-01", "02:00:00+00:00", "worker"]
    assert nightly[:8] == ["nightly-prune", "0", "3", "*", "*", "*", "Europe/Berlin", "prune"]
    assert nightly[8].startswith("20") and nightly[9] in ("03:00:00+01:00", "03:00:00+02:00")
    assert nightly[-2:] == ["never", "worker"]

    found = json.loads(await ok(stack, "stats", "--json"))
    [listed_every, listed_nightly] = found["jobs"]["schedules"]
    assert (listed_nightly["name"], listed_nightly["time_zone"], listed_nightly["last_run_at"]) == (
        "nightly-prune",
        "Europe/Berlin",
        None,
    )
    assert datetime.fromisoformat(listed_nightly["next_run_at"]) > datetime.now(UTC)
    assert datetime.fromisoformat(listed_every["next_run_at"]) < datetime.now(UTC)
