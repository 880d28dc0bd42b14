"""Every example in the README runs."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.contract.jobs import acting_as

README = (Path(__file__).parent.parent / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_install_and_run_and_the_test_commands(tmp_path: Path):
    """The run command, exactly as written but on a free port, serves until SIGINT."""
    first = blocks("sh")[0].strip().splitlines()
    assert len(first) == 2
    assert first[1].endswith("pytest")
    run = first[0].rsplit("&& ", 1)[1].split()
    assert run[0] == "reactor"
    proc = subprocess.Popen([sys.executable, "-m", "reactor.cli", *run[1:], "--port", "0"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("export SUPABASE_URL=http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert (tmp_path / ".devstack" / "keys.json").exists()


def test_reactor_sql_prints_the_contract():
    out = subprocess.run([sys.executable, "-m", "reactor.cli", "sql"], capture_output=True,
                         text=True, check=True)
    assert "create or replace function public.reactor_claim" in out.stdout


def test_ci_runs_exactly_the_readme_test_command():
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert blocks("sh")[0].strip().splitlines()[1] in ci


@pytest.mark.anyio
async def test_readme_sql_examples_run_as_documented(db: asyncpg.Connection):
    create, insert = blocks("sql")
    await db.execute(create)
    async with acting_as(db, "authenticated", "6f0a2b9e-6d55-4c1b-9d7e-0f2f2b0c1a11"):
        await db.execute(insert)
        assert await db.fetchval("select count(*) from public.jobs") == 1
    assert await db.fetchval("select count(*) from reactor.job_tables") == 2
