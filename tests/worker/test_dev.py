"""`reactor dev`, the README's first command: demo jobs flow through a demo worker on the local stack."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest

from tests.worker.conftest import WorkerProcess

pytestmark = pytest.mark.anyio


async def test_reactor_dev_runs_the_demo_jobs_to_completion_and_stops_on_ctrl_c(
    database_url: str, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "reactor.cli",
        "dev",
        "--database-url",
        database_url,
        "--port",
        "0",
        "--home",
        str(tmp_path),
    ]
    async with await anyio.open_process(command) as process:
        dev = WorkerProcess(process)
        async with anyio.create_task_group() as group:
            group.start_soon(dev.collect)
            try:
                await dev.wait_for_output("demo jobs done", timeout=60)
                process.send_signal(signal.SIGINT)
                assert await dev.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
    output = dev.output
    for job_type, attempts in (("send_email", 1), ("resize_image", 1), ("flaky_webhook", 2)):
        assert f"{job_type}: completed after {attempts} attempt(s)" in output
    assert output.count("send_email: completed") == 2
    assert "worker stopped" in output
