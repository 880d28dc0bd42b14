"""`reactor devstack` as a user runs it: a subprocess printing export lines, stopped by a signal."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from supabase import acreate_client

pytestmark = pytest.mark.anyio

EXPORTS = ["DATABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_URL"]


async def read_exports(proc: subprocess.Popen) -> dict[str, str]:
    found: dict[str, str] = {}
    while len(found) < len(EXPORTS):
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line, f"reactor devstack ended early: {proc.stderr.read()}"
        assert line.startswith("export "), line
        name, _, value = line.strip().removeprefix("export ").partition("=")
        found[name] = value
    return found


@contextlib.asynccontextmanager
async def devstack(cwd: Path, *args: str, stop: int = signal.SIGINT) -> AsyncIterator[dict[str, str]]:
    """Run `reactor devstack --port 0 …` in `cwd`; yield its exports; stop it and check it exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactor.cli", "devstack", "--port", "0", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        with anyio.fail_after(90):
            yield await read_exports(proc)
    finally:
        proc.send_signal(stop)
        code = await anyio.to_thread.run_sync(proc.wait, 30)
    assert code == 0, proc.stderr.read()


async def test_devstack_command_prints_exports_serves_and_stops_cleanly(database_url: str, tmp_path: Path):
    async with devstack(tmp_path, "--home", str(tmp_path / "ds"), "--database-url", database_url) as env:
        assert sorted(env) == EXPORTS
        sb = await acreate_client(env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"])
        stats = (await sb.rpc("reactor_stats", {"p_table": "jobs"}).execute()).data
        assert stats["table"] == "jobs"
        assert (tmp_path / "ds" / "keys.json").exists()


async def test_embedded_postgres_keeps_data_and_keys_until_fresh(tmp_path: Path):
    async def add_job(env: dict[str, str]) -> None:
        sb = await acreate_client(env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"])
        await sb.table("jobs").insert({"job_type": "kept"}).execute()

    async def jobs(env: dict[str, str]) -> list[str]:
        sb = await acreate_client(env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"])
        return [r["job_type"] for r in (await sb.table("jobs").select("job_type").execute()).data]

    async with devstack(tmp_path) as first:
        await add_job(first)
    assert (tmp_path / ".devstack").is_dir()
    async with devstack(tmp_path, stop=signal.SIGTERM) as again:
        assert (again["SUPABASE_ANON_KEY"], await jobs(again)) == (first["SUPABASE_ANON_KEY"], ["kept"])
    async with devstack(tmp_path, "--fresh") as fresh:
        assert fresh["SUPABASE_ANON_KEY"] != first["SUPABASE_ANON_KEY"]
        assert await jobs(fresh) == []


@pytest.mark.parametrize("command", ["devstack", "dev"])
@pytest.mark.parametrize("module", ["jwt"])
def test_without_the_stacks_extra_the_command_says_what_to_install(command: str, module: str) -> None:
    """As in the runtime image, which installs the worker's dependencies only."""
    hide = f"import sys; sys.modules[{module!r}] = None; from reactor.cli import main; sys.exit(main([{command!r}]))"
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"reactor {command}: the local stack is not installed ({module} is missing): pip install 'reactor[devstack]'\n"
    )
