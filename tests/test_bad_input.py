"""Bad input that other test files do not try yet: each gets one clear message naming the
problem, and no job is lost or changed. docs/reliability.md lists every bad input and its test."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import anyio
import asyncpg
import pytest
from aiohttp import web

from reactor import Job, Reactor, RetryLater
from reactor.config import load
from reactor.devstack import database
from tests.support.http_server import http_server
from tests.support.worker import (
    insert,
    row,
    running,
    status_is,
    worker_config,
    worker_env,
    worker_process,
)

pytestmark = pytest.mark.anyio

empty = Reactor()  # `reactor run tests.test_bad_input:empty`: an app with no handlers
twice = Reactor()  # `reactor run tests.test_bad_input:twice`: two handlers for one job type


async def noop(job: Job) -> None:
    return None


twice.handler("t")(noop)
twice.handler("t")(noop)


@pytest.mark.parametrize(
    "job_type, options, message",
    [
        ("", {}, "a job type is 1 to 200 characters"),
        ("x" * 201, {}, "a job type is 1 to 200 characters"),
        ("t", {"table": "Bad-Table"}, "invalid job table name 'Bad-Table'"),
        ("t", {"timeout": 0}, "t: timeout must be above 0 seconds"),
        ("t", {"max_attempts": 0}, "t: max_attempts must be from 1 to 1000"),
        ("t", {"max_attempts": 1001}, "t: max_attempts must be from 1 to 1000"),
    ],
)
def test_a_bad_handler_registration_is_refused_when_decorated(job_type, options, message) -> None:
    app = Reactor()
    with pytest.raises(ValueError) as caught:
        app.handler(job_type, **options)(noop)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((), {}, "RetryLater takes a delay or an `at` time, exactly one of them"),
        (
            (5,),
            {"at": datetime(2100, 1, 1, tzinfo=UTC)},
            "RetryLater takes a delay or an `at` time, exactly one of them",
        ),
        ((), {"at": datetime(2100, 1, 1)}, "RetryLater(at=...) needs a timezone-aware datetime"),
        ((-1,), {}, "RetryLater delay must not be negative"),
    ],
)
def test_a_bad_retry_request_is_refused_where_the_handler_raises_it(args, kwargs, message) -> None:
    with pytest.raises(ValueError) as caught:
        RetryLater(*args, **kwargs)
    assert str(caught.value) == message


@pytest.mark.parametrize("percent", [-1, 101])
async def test_progress_out_of_range_is_refused_before_any_call(percent: int) -> None:
    job = Job(id=1, table="jobs", job_type="t", payload={}, attempt=1, max_attempts=1, lease_token="token")
    with pytest.raises(ValueError) as caught:
        await job.set_progress(percent)
    assert str(caught.value) == f"progress must be between 0 and 100, got {percent}"


def test_an_unknown_option_given_in_code_is_refused() -> None:
    with pytest.raises(TypeError) as caught:
        load({"SUPABASE_URL": "http://127.0.0.1:1", "SUPABASE_SERVICE_ROLE_KEY": "k"}, concurency=3)
    assert str(caught.value) == "unknown configuration options: concurency"


def test_a_misspelt_option_is_refused_when_the_app_is_built_not_with_a_traceback_at_run() -> None:
    with pytest.raises(TypeError) as caught:
        Reactor(concurency=3)
    assert str(caught.value) == "unknown configuration options: concurency"


def reactor_run(app: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "k"}
    return subprocess.run(
        [sys.executable, "-m", "reactor.cli", "run", app],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "app, message",
    [
        (
            "tests.chaos.app:record_run",
            "reactor run: tests.chaos.app:record_run is a function, not a reactor.Reactor",
        ),
        ("tests.chaos.nosuch:app", "reactor run: No module named 'tests.chaos.nosuch'"),
        ("tests.chaos.app:nosuch", "reactor run: module 'tests.chaos.app' has no attribute 'nosuch'"),
    ],
)
def test_reactor_run_names_an_app_it_cannot_load(app: str, message: str) -> None:
    done = reactor_run(app)
    assert (done.returncode, done.stderr.strip()) == (2, message)


def test_reactor_run_of_an_app_without_handlers_says_how_to_add_one() -> None:
    done = reactor_run("tests.test_bad_input:empty")
    assert done.returncode == 2
    assert "no handlers registered: decorate functions with @app.handler('job_type')" in done.stderr
    assert "Traceback" not in done.stderr


def test_reactor_run_of_an_app_with_two_handlers_for_one_job_type_names_it_in_one_line() -> None:
    done = reactor_run("tests.test_bad_input:twice")
    assert done.returncode == 2
    assert "a handler for 't' in table 'jobs' exists already" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_anon_key_in_place_of_the_service_key_is_named_and_no_job_is_touched(
    stack, db: asyncpg.Connection
) -> None:
    job_id = await insert(db, "echo")
    async with worker_process(worker_env(stack, SUPABASE_SERVICE_ROLE_KEY=stack.keys.anon)) as worker:
        await worker.wait_for_output("cannot claim jobs")
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert "permission denied for function reactor_" in worker.output
    assert "(HTTP 401) (check SUPABASE_SERVICE_ROLE_KEY); retrying on the next tick" in worker.output
    assert stack.keys.anon not in worker.output
    untouched = await row(db, job_id)
    assert (untouched["status"], untouched["attempts"]) == ("pending", 0)


async def test_a_table_that_is_not_a_job_table_is_named_with_how_to_create_it(
    stack, db: asyncpg.Connection
) -> None:
    job_id = await insert(db, "echo")
    async with worker_process(worker_env(stack, REACTOR_TABLE="emails")) as worker:
        await worker.wait_for_output("cannot claim jobs")
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert (
        """unknown job table "emails"; Create it with: select reactor.create_job_table('<name>'); (HTTP 400)"""
        in worker.output
    )
    assert (await row(db, job_id))["status"] == "pending"


async def test_a_project_url_with_a_path_is_reported_and_no_job_is_touched(
    stack, db: asyncpg.Connection
) -> None:
    job_id = await insert(db, "echo")
    async with worker_process(worker_env(stack, SUPABASE_URL=f"{stack.url}/rest/v1/")) as worker:
        assert await worker.wait() == 2
    assert "SUPABASE_URL is malformed" in worker.output
    assert "expected the project URL without the API path, e.g. https://<ref>.supabase.co" in worker.output
    assert "Traceback" not in worker.output
    assert (await row(db, job_id))["status"] == "pending"


async def test_a_project_url_that_answers_but_is_not_supabase_is_reported_and_no_job_is_touched(
    stack, db: asyncpg.Connection
) -> None:
    """Another web server at SUPABASE_URL (a typo of the host, the app's own site): it answers 404
    to every request, as a static site does."""
    job_id = await insert(db, "echo")

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html><body>Not Found</body></html>", content_type="text/html")

    site = web.Application()
    site.router.add_route("*", "/{path:.*}", not_found)
    async with http_server(site) as url, worker_process(worker_env(stack, SUPABASE_URL=url)) as worker:
        await worker.wait_for_output("cannot claim jobs")
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert (
        "cannot claim jobs: reactor_declare_limits: <html><body>Not Found</body></html> (HTTP 404)"
        " (check SUPABASE_URL: the server there is not a Supabase project's API); retrying on the next tick"
    ) in worker.output
    assert "Traceback" not in worker.output
    assert (await row(db, job_id))["status"] == "pending"


async def test_a_database_without_reactors_functions_is_reported_and_no_job_is_touched(
    stack, db: asyncpg.Connection
) -> None:
    job_id = await insert(db, "echo")
    await db.execute("drop function public.reactor_tick, public.reactor_claim_jobs")
    async with worker_process(worker_env(stack)) as worker:
        await worker.wait_for_output("cannot claim jobs")
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    assert "Could not find the function public.reactor_" in worker.output
    assert "in the schema cache" in worker.output
    assert "run `reactor migrate` or paste `reactor sql` into the SQL editor" in worker.output
    assert (
        "if they ran, the API's schema cache is stale: run `notify pgrst, 'reload schema';`" in worker.output
    )
    assert (await row(db, job_id))["status"] == "pending"


async def test_a_result_with_nan_fails_the_job_for_good_with_a_clear_error(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()

    @app.handler("nan")
    async def nan(job: Job) -> dict:
        return {"ratio": math.nan}

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "nan")
        found = await status_is(db, job_id, "failed")
    assert (
        found["last_error"]
        == "the handler's result is not JSON: Out of range float values are not JSON compliant"
    )
    assert found["attempts"] == 1


@pytest.mark.parametrize(
    "bad_result, says",
    [
        pytest.param(  # valid JSON; Postgres jsonb refuses \u0000
            {"text": "a\x00b"},
            "the result could not be recorded: reactor_complete: unsupported Unicode escape sequence",
            id="nul-character",
        ),
        pytest.param(
            {"blob": "x" * (17 * 1024 * 1024)},
            "the result could not be recorded: reactor_complete: Maximum request body size 16777216 exceeded."
            " (HTTP 413)",
            id="over-the-apis-16-mib-body-limit",
        ),
    ],
)
async def test_a_result_the_database_refuses_fails_only_its_own_job_at_once_and_says_why(
    stack, db: asyncpg.Connection, bad_result: dict, says: str
) -> None:
    app = Reactor()
    finish = anyio.Event()
    runs: list[int] = []

    @app.handler("bad")
    async def bad(job: Job) -> dict:
        runs.append(job.id)
        await finish.wait()
        return bad_result

    @app.handler("good")
    async def good(job: Job) -> dict:
        runs.append(job.id)
        await finish.wait()
        return {"fine": True}

    async with running(app, worker_config(stack)):
        bad_id = await insert(db, "bad", max_attempts=2)
        good_ids = [await insert(db, "good") for _ in range(3)]
        for job_id in [bad_id, *good_ids]:
            await status_is(db, job_id, "processing")
        finish.set()  # all four outcomes go to the API together, as a burst's would
        refused = await status_is(db, bad_id, "failed", "completed", timeout=30)
        goods = [await status_is(db, job_id, "completed", timeout=30) for job_id in good_ids]
    assert (refused["status"], refused["attempts"]) == ("failed", 1), refused["last_error"]
    assert refused["last_error"].startswith(says), refused["last_error"]
    assert [g["attempts"] for g in goods] == [1, 1, 1]
    assert sorted(runs) == sorted([bad_id, *good_ids])  # nobody ran twice


async def test_payloads_that_are_not_objects_reach_their_handlers_as_they_are(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()

    @app.handler("echo")
    async def echo(job: Job) -> dict:
        return {"type": type(job.payload).__name__, "payload": job.payload}

    payloads = [[1, "two"], 7, 2.5, "text", True]
    async with running(app, worker_config(stack)):
        ids = [await insert(db, "echo", payload) for payload in payloads]
        found = [await status_is(db, job_id, "completed") for job_id in ids]
    assert [json.loads(f["result"]) for f in found] == [
        {"type": type(p).__name__, "payload": p} for p in payloads
    ]


async def test_a_handler_error_over_ten_thousand_characters_is_kept_to_its_first_ten_thousand(
    stack, db: asyncpg.Connection
) -> None:
    app = Reactor()

    @app.handler("loud")
    async def loud(job: Job) -> None:
        raise ValueError("x" * 20_000)

    async with running(app, worker_config(stack)):
        job_id = await insert(db, "loud", max_attempts=1)
        found = await status_is(db, job_id, "failed")
    assert found["last_error"] == "ValueError: " + "x" * (10_000 - len("ValueError: "))


async def test_reactor_migrate_on_a_postgres_without_supabases_schemas_names_what_is_missing(
    server_url: str,
) -> None:
    name = f"reactor_plain_{uuid.uuid4().hex[:8]}"
    url = await database.create_database(server_url, name)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "reactor.cli", "migrate", "--database-url", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        await database.drop_database(server_url, name)
    assert done.returncode == 1
    assert done.stderr.strip() == 'reactor migrate: InvalidSchemaNameError: schema "auth" does not exist'


async def test_a_payload_over_realtimes_one_mebibyte_limit_still_runs_with_all_of_it(
    stack, db: asyncpg.Connection
) -> None:
    """Realtime sends such a row without its payload (error 413); the event is only a hint, and
    the claim over REST carries the whole payload."""
    app = Reactor()

    @app.handler("measure")
    async def measure(job: Job) -> dict:
        return {"length": len(job.payload["blob"])}

    async with running(app, worker_config(stack, realtime=True)):
        # Within the 1 MiB every payload is held to (as Postgres stores it), yet over 1 MiB as JSON text.
        job_id = await insert(db, "measure", {"blob": "\n" * 600_000})
        found = await status_is(db, job_id, "completed")
    assert (found["result"], found["attempts"]) == ('{"length": 600000}', 1)


@pytest.mark.parametrize("job_type", ["", "t" * 201])
async def test_a_job_type_empty_or_over_two_hundred_characters_cannot_be_inserted(
    db: asyncpg.Connection, job_type: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="jobs_job_type_check"):
        await insert(db, job_type)
    assert await db.fetchval("select count(*) from public.jobs") == 0
