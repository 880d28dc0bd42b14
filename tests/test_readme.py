"""Every example in the README runs."""

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest

from reactor import config, migrations
from reactor.devstack.stack import serve
from tests.support.contract import acting_as, install_pg_cron_stand_in, install_pg_net_stand_in
from tests.support.http_server import http_server
from tests.support.worker import WorkerProcess, insert, status_is, wait_until, worker_env, worker_process

pytestmark = pytest.mark.anyio


README = (Path(__file__).parent.parent / "README.md").read_text()


def blocks(lang: str, section: str | None = None) -> list[str]:
    """The README's code blocks in `lang`, or only those under the heading `section`."""
    text = README if section is None else README.split(f"\n{section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


async def test_readme_run_command_shows_demo_jobs_flowing(tmp_path: Path):
    """The first command, exactly as written but on a free port, in a fresh directory."""
    first = blocks("sh")[0].strip().splitlines()
    assert len(first) == 2
    assert first[1].endswith("pytest")
    run = first[0].rsplit("&& ", 1)[1].split()
    assert run == ["reactor", "dev"]
    command = [sys.executable, "-m", "reactor.cli", *run[1:], "--port", "0"]
    async with await anyio.open_process(command, cwd=tmp_path) as process:
        dev = WorkerProcess(process)
        async with anyio.create_task_group() as group:
            group.start_soon(dev.collect)
            try:
                await dev.wait_for_output("demo jobs done", timeout=90)
                process.send_signal(signal.SIGINT)
                assert await dev.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
    for job_type, attempts in (("send_email", 1), ("resize_image", 1), ("flaky_webhook", 2)):
        assert f"{job_type}: completed after {attempts} attempt(s)" in dev.output
    assert dev.output.count("send_email: completed") == 2
    assert "worker stopped" in dev.output


async def test_readme_worker_example_runs_a_job(database_url: str, db: asyncpg.Connection, tmp_path: Path):
    (tmp_path / "worker.py").write_text(blocks("python")[0])
    [command] = [b.split() for b in blocks("sh") if "reactor run" in b]
    assert command[-3:] == ["reactor", "run", "worker:app"]
    async with serve(database_url, port=0) as stack:
        env = worker_env(stack, PYTHONPATH=str(tmp_path), REACTOR_REALTIME="on")
        job_id = await insert(db, "send_email", {"to": "ada@example.com"})
        async with worker_process(env, app="worker:app"):
            done = await status_is(db, job_id, "completed", "failed", timeout=30)
    assert json.loads(done["result"]) == {"sent": True, "to": "ada@example.com"}
    assert done["progress"] == 100


def reactor_sql(*args: str) -> str:
    command = [sys.executable, "-m", "reactor.cli", "sql", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_readme_handler_test_runs_with_pytest_and_no_database(tmp_path: Path):
    worker, handler_test = blocks("python")[:2]
    (tmp_path / "worker.py").write_text(worker)
    (tmp_path / "test_worker.py").write_text(handler_test)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_worker.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


def test_reactor_sql_prints_the_contract():
    out = reactor_sql()
    assert out == migrations.schema_script()
    assert "create or replace function public.reactor_claim" in out


def test_reactor_sql_upgrade_prints_the_migrations():
    out = reactor_sql("--upgrade")
    assert out == migrations.script()
    assert all(f"-- ==== {path.name} ====" in out for path in migrations.migration_files())


def test_ci_runs_exactly_the_readme_test_command():
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert blocks("sh")[0].strip().splitlines()[1] in ci


async def test_readme_sql_examples_run_as_documented(db: asyncpg.Connection):
    create, allow, insert, _ = blocks("sql", "## The database contract")
    await db.execute(create)
    async with acting_as(db, "authenticated", "6f0a2b9e-6d55-4c1b-9d7e-0f2f2b0c1a11"):
        with pytest.raises(
            asyncpg.InsufficientPrivilegeError, match='job type "send_email" may not be inserted'
        ):
            await db.execute(insert)
    await db.execute(allow)
    async with acting_as(db, "authenticated", "6f0a2b9e-6d55-4c1b-9d7e-0f2f2b0c1a11"):
        await db.execute(insert)
        assert await db.fetchval("select count(*) from public.jobs") == 1
    assert await db.fetchval("select count(*) from reactor.job_tables") == 2


def settings_rows() -> dict[str, str]:
    """The README's settings table: variable -> default column."""
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([A-Z_]+)` \| (.*?) \|", section, flags=re.M))


def test_readme_settings_table_lists_every_variable_with_its_true_default():
    rows = settings_rows()
    variables = {variable: (name, parse) for name, (variable, parse, _) in config._VARIABLES.items()}
    assert set(rows) == set(variables) | set(config._KEY_VARIABLES) | {config.SECRET_ENV}
    defaults = {f.name: f.default for f in fields(config.Config)}
    for variable, (name, parse) in variables.items():
        if name in ("supabase_url", "worker_id"):  # required, and made up per process
            continue
        assert parse(rows[variable].strip("`")) == defaults[name], variable
    assert rows["SUPABASE_URL"] == rows["SUPABASE_SERVICE_ROLE_KEY"] == "required"


async def test_readme_operations_block_runs_against_the_local_stack(
    database_url: str, db: asyncpg.Connection
):
    [script] = [b for b in blocks("sh") if "reactor enqueue" in b]
    failed = await insert(db, "send_email", status="failed", attempts=5, last_error="smtp down")
    old = await insert(
        db, "send_email", status="completed", attempts=1, completed_at=datetime.now(UTC) - timedelta(days=8)
    )
    async with serve(database_url, port=0) as stack:
        env = worker_env(stack, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        done = await anyio.run_process(["bash", "-euo", "pipefail", "-c", script], env=env, check=False)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert out.splitlines()[0].split()[:3] == ["table", "pending", "processing"]
    assert out.splitlines()[1].split()[:6] == ["jobs", "0", "0", "0", "1", "1"]
    [enqueued] = await db.fetch("select * from public.jobs where id not in ($1, $2)", failed, old)
    assert f"cancelled 1 job(s): {enqueued['id']}" in out and f"retried 1 job(s): {failed}" in out
    assert "pruned 1 job(s) finished more than 7d ago" in out
    assert (enqueued["status"], enqueued["priority"]) == ("cancelled", 10)
    assert json.loads(enqueued["payload"]) == {"to": "ada@example.com"}
    assert (await db.fetchval("select status from public.jobs where id = $1", failed)) == "pending"
    assert await db.fetchval("select count(*) from public.jobs where id = $1", old) == 0
    stats = json.loads(out[out.index("{") :])
    assert stats["jobs"]["counts"] == {
        "pending": 1,
        "processing": 0,
        "waiting": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
    }


async def test_readme_limits_block_sets_pauses_resumes_and_lists_limits(
    database_url: str, db: asyncpg.Connection
):
    [script] = [b for b in blocks("sh") if "reactor limit " in b]
    async with serve(database_url, port=0) as stack:
        env = worker_env(stack, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        done = await anyio.run_process(["bash", "-euo", "pipefail", "-c", script], env=env, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "jobs quote: concurrency 4, rate 2 per 1 s, per user 1, paused" in out.splitlines()
    assert out.splitlines()[-1] == "jobs quote: concurrency 4, rate 2 per 1 s, per user 1"
    limits = await db.fetchrow("select * from reactor.job_limits where job_type = 'quote'")
    assert (limits["concurrency"], limits["rate"], limits["per_user"], limits["paused"]) == (4, 2, 1, False)


async def test_readme_frontend_snippet_watches_its_job_to_completion(
    database_url: str, db: asyncpg.Connection, js_dir: Path, tmp_path: Path
):
    """The supabase-js snippet, as a signed-in user, with the README's worker doing the job."""
    [snippet] = blocks("js", "## From the frontend")
    script = js_dir / f"readme-{uuid.uuid4().hex[:8]}.mjs"
    script.write_text(
        "import { createClient } from '@supabase/supabase-js'\n"
        "const supabase = createClient(process.env.SUPABASE_URL, process.env.SUPABASE_ANON_KEY,"
        " { accessToken: async () => process.env.USER_TOKEN })\n" + snippet
    )
    (tmp_path / "worker.py").write_text(blocks("python")[0])
    user = str(uuid.uuid4())
    await db.execute(blocks("sql", "## The database contract")[1])  # the insert policy allows send_email
    try:
        async with serve(database_url, port=0) as stack:
            env = {
                **os.environ,
                "SUPABASE_URL": stack.url,
                "SUPABASE_ANON_KEY": stack.keys.anon,
                "USER_TOKEN": stack.keys.user_token(user),
            }
            node = str(js_dir / "node_modules" / ".bin" / "node")
            async with await anyio.open_process([node, str(script)], env=env) as frontend:
                browser = WorkerProcess(frontend)
                async with anyio.create_task_group() as group:
                    group.start_soon(browser.collect)
                    try:
                        await browser.wait_for_output("pending 0", timeout=30)
                        worker = worker_env(stack, PYTHONPATH=str(tmp_path))
                        async with worker_process(worker, app="worker:app"):
                            await browser.wait_for_output("completed", timeout=30)
                    finally:
                        frontend.kill()
    finally:
        script.unlink()
    lines = browser.stdout.decode().splitlines()
    assert lines[0] == "pending 0  null"
    assert "processing 50 rendering null" in lines
    status, progress, message, result = lines[-1].split(" ", 3)
    assert (status, progress, message) == ("completed", "100", "rendering")
    assert json.loads(result) == {"sent": True, "to": "ada@example.com"}
    [job] = await db.fetch("select * from public.jobs")
    assert str(job["user_id"]) == user and job["status"] == "completed"


async def test_readme_local_sign_in_script_signs_up_and_watches_its_job_finish(
    database_url: str, db: asyncpg.Connection, js_dir: Path, tmp_path: Path
):
    """The local stack's supabase-js script, unchanged: a new user, their job, the worker doing it."""
    [script] = blocks("js", "## The local stack")
    path = js_dir / f"readme-auth-{uuid.uuid4().hex[:8]}.mjs"
    path.write_text(script)
    (tmp_path / "worker.py").write_text(blocks("python")[0])
    await db.execute(blocks("sql", "## The database contract")[1])  # the insert policy allows send_email
    try:
        async with serve(database_url, port=0) as stack:
            env = {**os.environ, "SUPABASE_URL": stack.url, "SUPABASE_ANON_KEY": stack.keys.anon}
            node = str(js_dir / "node_modules" / ".bin" / "node")
            async with await anyio.open_process([node, str(path)], env=env) as frontend:
                browser = WorkerProcess(frontend)
                async with anyio.create_task_group() as group:
                    group.start_soon(browser.collect)
                    try:
                        await browser.wait_for_output("SUBSCRIBED", timeout=30)
                        async with worker_process(
                            worker_env(stack, PYTHONPATH=str(tmp_path)), app="worker:app"
                        ):
                            assert await browser.wait() == 0
                    finally:
                        if frontend.returncode is None:
                            frontend.kill()
    finally:
        path.unlink()
    lines = browser.stdout.decode().splitlines()
    user_id = lines[0].removeprefix("signed up as ")
    status, result = lines[-1].split(" ", 1)
    assert (status, json.loads(result)) == ("completed", {"sent": True, "to": "ada@example.com"})
    [job] = await db.fetch("select * from public.jobs")
    assert str(job["user_id"]) == user_id and job["status"] == "completed"
    assert await db.fetchval("select count(*) from auth.sessions") == 0  # signed out


async def test_readme_dashboard_block_serves_on_loopback_and_behind_a_token_elsewhere(database_url: str):
    [script] = [b for b in blocks("sh") if "reactor dashboard" in b]
    loopback, exposed = script.strip().splitlines()
    async with serve(database_url, port=0) as stack:
        for line, first_page in ((loopback, 200), (exposed, 303)):
            command = line.split("#")[0].strip().replace("reactor ", f"{sys.executable} -m reactor.cli ", 1)
            env = worker_env(stack)
            async with await anyio.open_process(
                ["bash", "-c", f"{command} --port 0"], env=env, start_new_session=True
            ) as process:
                dashboard = WorkerProcess(process)
                async with anyio.create_task_group() as group:
                    group.start_soon(dashboard.collect)
                    try:
                        await dashboard.wait_for_output("dashboard on http://")
                        port = re.search(r"dashboard on http://[^:]+:(\d+)", dashboard.output).group(1)
                        async with httpx.AsyncClient() as client:
                            page = await client.get(
                                f"http://127.0.0.1:{port}/", headers={"Accept": "text/html"}
                            )
                        assert page.status_code == first_page
                        os.killpg(process.pid, signal.SIGINT)  # bash and the dashboard it started
                        assert await dashboard.wait() == 0
                    finally:
                        if process.returncode is None:
                            process.kill()
                    group.cancel_scope.cancel()


async def test_readme_recurring_job_is_enqueued_once_per_missed_time_by_two_workers(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
):
    (tmp_path / "stats_worker.py").write_text(blocks("python", "## Recurring jobs")[0])
    async with serve(database_url, port=0) as stack:
        env = worker_env(stack, PYTHONPATH=str(tmp_path))
        async with worker_process(env, app="stats_worker:app") as first:
            await first.wait_for_output("declared schedules refresh_stats", timeout=30)
            first.signal(signal.SIGTERM)
            assert await first.wait() == 0
        # As if every worker had been down for twelve minutes, within the hour it catches up.
        down_since = await db.fetchval(
            "update reactor.schedules set fired_through = now() - interval '12 minutes' returning fired_through"
        )
        start = down_since.replace(minute=down_since.minute - down_since.minute % 5, second=0, microsecond=0)
        due = [start + timedelta(minutes=5 * n) for n in (1, 2, 3)]  # every five minutes since
        async with (
            worker_process({**env, "REACTOR_WORKER_ID": "a"}, app="stats_worker:app"),
            worker_process({**env, "REACTOR_WORKER_ID": "b"}, app="stats_worker:app"),
        ):

            async def done() -> list[asyncpg.Record]:
                jobs = await db.fetch("select * from public.jobs order by run_at")
                return jobs if len(jobs) >= 2 and all(j["status"] == "completed" for j in jobs) else []

            await wait_until(done, timeout=30)
            await anyio.sleep(1)  # long enough for a second copy of any time to appear
        back = await db.fetchval("select now()")
    jobs = await db.fetch("select * from public.jobs order by run_at")
    assert [j["run_at"] for j in jobs] == [t for t in due if t <= back]
    for job in jobs:
        assert job["job_type"] == "refresh_stats" and job["status"] == "completed"
        assert json.loads(job["result"]) == {"refreshed_for": job["run_at"].isoformat(), "scope": "all"}


async def test_readme_schedule_sql_declares_in_a_zone_and_pg_cron_fires_in_the_database(
    db: asyncpg.Connection,
):
    declare, with_pg_cron = blocks("sql", "## Recurring jobs")
    await db.execute(declare)
    digest = await db.fetchrow("select * from reactor.schedules where name = 'weekly-digest'")
    assert (digest["job_type"], digest["cron"], digest["time_zone"], digest["catch_up_seconds"]) == (
        "send_digest",
        "0 9 * * 1",
        "America/New_York",
        7200,
    )
    assert json.loads(digest["payload"]) == {"kind": "weekly"}
    with pytest.raises(asyncpg.RaiseError, match="needs the pg_cron extension"):
        await db.execute(with_pg_cron)
    await install_pg_cron_stand_in(db)
    await db.execute(with_pg_cron)
    commands = {r["jobname"]: r["command"] for r in await db.fetch("select jobname, command from cron.job")}
    assert set(commands) == {"reactor:nightly-prune", "reactor:reap:jobs", "reactor:prune:jobs"}
    await db.execute("update reactor.schedules set fired_through = now() - interval '1 minute'")
    job_id = await db.fetchval(commands["reactor:nightly-prune"])
    assert await db.fetchval("select job_type from public.jobs where id = $1", job_id) == "prune_exports"


async def test_readme_fan_in_example_combines_its_childrens_quotes_and_failures(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
):
    (tmp_path / "quotes_worker.py").write_text(blocks("python", "## Child jobs and fan-in")[0])
    async with serve(database_url, port=0) as stack:
        env = worker_env(stack, PYTHONPATH=str(tmp_path))
        async with worker_process(env, app="quotes_worker:app") as worker:
            job_id = await insert(db, "quote_all", {"terms": [24, 36, 60]})
            done = await status_is(db, job_id, "completed", "failed", timeout=30)
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0
    assert json.loads(done["result"]) == {
        "quotes": {"24 months": {"monthly": 252}, "36 months": {"monthly": 228}},
        "failed": {"60 months": "PermanentError: no offer beyond 48 months"},
    }
    assert (done["resumed"], done["attempts"]) == (1, 1)
    children = await db.fetch("select child_key, user_id from public.jobs where parent_id = $1", job_id)
    assert sorted(c["child_key"] for c in children) == ["24 months", "36 months", "60 months"]


async def test_readme_job_log_example_writes_the_lines_its_owner_reads(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
):
    (tmp_path / "import_worker.py").write_text(blocks("python", "## Job logs")[0])
    owner = uuid.uuid4()
    async with serve(database_url, port=0) as stack:
        env = worker_env(stack, PYTHONPATH=str(tmp_path))
        async with worker_process(env, app="import_worker:app") as worker:
            rows = [{"email": "a@example.com"}, {}, {"email": "c@example.com"}]
            job_id = await insert(db, "import_csv", {"rows": rows}, user_id=owner)
            done = await status_is(db, job_id, "completed", "failed", timeout=30)
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0
    assert json.loads(done["result"]) == {"imported": 2}
    async with acting_as(db, "authenticated", str(owner)):
        lines = await db.fetch(
            "select level, message from public.job_logs where job_id = $1 order by id", job_id
        )
    assert [tuple(r) for r in lines] == [
        ("info", "importing 3 rows"),
        ("warning", "row 1 has no e-mail; skipped"),
    ]


async def test_readme_webhook_sql_posts_a_finished_jobs_outcome_through_pg_net(db: asyncpg.Connection):
    webhook = blocks("sql", "## The database contract")[3]
    with pytest.raises(
        asyncpg.RaiseError, match=r"webhook crm-sync: reactor\.add_webhook needs the pg_net extension"
    ):
        await db.execute(webhook)
    await install_pg_net_stand_in(db)
    await db.execute(webhook)
    job_id = await insert(db, "sync_contact", {"contact": 7})
    [job] = await db.fetch("select * from public.reactor_claim('jobs', 'w', array['sync_contact'])")
    items = json.dumps([{"id": job_id, "lease_token": str(job["lease_token"]), "result": {"synced": True}}])
    await db.execute("select public.reactor_complete('jobs', $1)", items)
    [request] = await db.fetch("select url, body, headers from net.requests")
    assert request["url"] == "https://crm.example.com/hooks/reactor"
    assert json.loads(request["headers"])["Authorization"] == "Bearer crm-token"
    body = json.loads(request["body"])
    assert (body["id"], body["status"], body["result"]) == (job_id, "completed", {"synced": True})
    assert await db.fetchval("select reactor.remove_webhook('crm-sync')") is True


async def test_readme_hooks_example_tells_the_shop_after_the_outcome_is_recorded_retrying_a_refusal(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
):
    """The hooks and middleware example as `reactor run`, its webhook a real HTTP server that
    refuses the first call: the hook tries again, and the middleware's line is logged."""
    from aiohttp import web

    [example, _] = blocks("python", "## Hooks, middleware and tracing")
    (tmp_path / "orders_worker.py").write_text(example)
    received: list[tuple[dict, str]] = []

    async def webhook(request: web.Request) -> web.Response:
        body = await request.json()
        status = await db.fetchval("select status from public.jobs where id = $1", job_id)
        received.append((body, status))
        return web.Response(status=503 if len(received) == 1 else 200)

    shop = web.Application()
    shop.router.add_post("/orders", webhook)
    async with http_server(shop) as shop_url, serve(database_url, port=0) as stack:
        env = worker_env(stack, PYTHONPATH=str(tmp_path), SHOP_WEBHOOK_URL=f"{shop_url}/orders")
        job_id = await insert(db, "ship_order", {"order": 7})
        async with worker_process(env, app="orders_worker:app") as worker:
            await status_is(db, job_id, "completed", "failed", timeout=30)
            await wait_until(lambda: _true(len(received) == 2), timeout=30)
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0
    sent = {"order": 7, "outcome": "completed", "result": {"tracking": "TRK-7"}}
    assert received == [(sent, "completed"), (sent, "completed")]  # refused once, then accepted
    assert "ship_order took" in worker.output
    assert "not run" not in worker.output and "giving up" not in worker.output


async def test_readme_hooks_example_middleware_runs_under_reactor_testing(tmp_path: Path, monkeypatch):
    import importlib.util

    from loguru import logger

    from reactor.testing import perform

    [example, _] = blocks("python", "## Hooks, middleware and tracing")
    (tmp_path / "orders_worker_under_test.py").write_text(example)
    spec = importlib.util.spec_from_file_location(
        "orders_worker_under_test", tmp_path / "orders_worker_under_test.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        done = await perform(module.app, "ship_order", {"order": 8})
    finally:
        logger.remove(sink)
    assert (done.outcome.kind, done.outcome.result) == ("completed", {"tracking": "TRK-8"})
    assert [line for line in lines if line.startswith("ship_order took ")]


async def test_readme_tracing_example_prints_a_span_per_job(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
):
    [_, example] = blocks("python", "## Hooks, middleware and tracing")
    (tmp_path / "traced_worker.py").write_text(example)
    async with serve(database_url, port=0) as stack:
        env = worker_env(stack, PYTHONPATH=str(tmp_path))
        job_id = await insert(db, "resize_image", {"width": 640})
        async with worker_process(env, app="traced_worker:app") as worker:
            try:
                done = await status_is(db, job_id, "completed", "failed", timeout=30)
            except AssertionError:
                raise AssertionError(worker.output[-3000:]) from None
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0  # the batch processor flushes at exit
    assert json.loads(done["result"]) == {"width": 320}
    spans = worker.stdout.decode()
    assert spans.count('"name": "reactor.job"') == 1
    for attribute in (
        f'"job.id": {job_id}',
        '"job.type": "resize_image"',
        '"job.table": "jobs"',
        '"job.attempt": 1',
        '"outcome": "completed"',
        '"worker.id": ',
    ):
        assert attribute in spans


async def _true(value: bool) -> bool:
    return value
