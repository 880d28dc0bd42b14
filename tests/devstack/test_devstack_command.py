import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from supabase import acreate_client

pytestmark = pytest.mark.anyio


async def read_exports(proc: subprocess.Popen) -> dict[str, str]:
    found: dict[str, str] = {}
    while len(found) < 4:
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line, f"reactor devstack ended early: {proc.stderr.read()}"
        name, _, value = line.strip().removeprefix("export ").partition("=")
        found[name] = value
    return found


async def test_devstack_command_prints_exports_serves_and_stops_cleanly(database_url: str, tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactor.cli", "devstack", "--port", "0", "--home", str(tmp_path / "ds"),
         "--database-url", database_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    try:
        with anyio.fail_after(60):
            env = await read_exports(proc)
        assert sorted(env) == ["DATABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_URL"]
        sb = await acreate_client(env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"])
        stats = (await sb.rpc("reactor_stats", {"p_table": "jobs"}).execute()).data
        assert stats["table"] == "jobs"
        assert (tmp_path / "ds" / "keys.json").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        code = await anyio.to_thread.run_sync(proc.wait, 30)
    assert code == 0
