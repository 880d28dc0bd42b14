"""Every example in the README runs."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import pytest

from reactor.devstack.stack import serve
from tests.contract.jobs import acting_as
from tests.worker.conftest import WorkerProcess, insert, status_is, worker_env, worker_process

pytestmark = pytest.mark.anyio

README = (Path(__file__).parent.parent / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


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


def test_reactor_sql_prints_the_contract():
    out = subprocess.run([sys.executable, "-m", "reactor.cli", "sql"], capture_output=True,
                         text=True, check=True)
    assert "create or replace function public.reactor_claim" in out.stdout


def test_ci_runs_exactly_the_readme_test_command():
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert blocks("sh")[0].strip().splitlines()[1] in ci


async def test_readme_sql_examples_run_as_documented(db: asyncpg.Connection):
    create, insert = blocks("sql")
    await db.execute(create)
    async with acting_as(db, "authenticated", "6f0a2b9e-6d55-4c1b-9d7e-0f2f2b0c1a11"):
        await db.execute(insert)
        assert await db.fetchval("select count(*) from public.jobs") == 1
    assert await db.fetchval("select count(*) from reactor.job_tables") == 2
