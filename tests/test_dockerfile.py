"""What the Dockerfile's image would run, proven without a Docker engine: the Dockerfile parses and
keeps its properties, its install steps run as written into a fresh virtual environment, and
that environment's `reactor run` completes a job on the local stack and answers the HEALTHCHECK."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import pytest
from dockerfile_parse import DockerfileParser

from tests.support.worker import WorkerProcess, insert, status_is, worker_env

ROOT = Path(__file__).resolve().parents[1]
APP = """
from reactor import Job, Reactor

app = Reactor()


@app.handler("containerised")
async def containerised(job: Job) -> dict:
    return {"ran_in": "the image's environment"}
"""


def instructions() -> list[tuple[str, str]]:
    parsed = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return [(i["instruction"], i["value"]) for i in parsed.structure if i["instruction"] != "COMMENT"]


def only(name: str) -> str:
    values = [value for instruction, value in instructions() if instruction == name]
    assert len(values) == 1, f"expected one {name}, found {values}"
    return values[0]


def healthcheck_command() -> list[str]:
    return json.loads(re.search(r"CMD\s+(\[.*\])\s*$", only("HEALTHCHECK")).group(1))


def test_the_image_is_slim_runs_as_a_user_and_hands_sigterm_to_reactor_run() -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert only("USER") not in ("root", "0")
    assert json.loads(only("ENTRYPOINT")) == ["reactor", "run"]  # exec form: PID 1 is the worker
    assert json.loads(only("CMD")) == []  # the app comes from an argument or REACTOR_APP
    assert only("STOPSIGNAL") == "SIGTERM"
    assert "/healthz" in " ".join(healthcheck_command())
    runs = [value for instruction, value in steps if instruction == "RUN"]
    assert not any("[dev]" in run or "'.[" in run for run in runs)  # no dev extras


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    steps = instructions()
    deps = next(i for i, (ins, value) in enumerate(steps) if ins == "RUN" and "requirements.txt" in value)
    copies = [value.split()[0] for ins, value in steps[:deps] if ins == "COPY"]
    assert copies == ["pyproject.toml"]  # the dependency layer sees nothing that changes with the code
    source = next(i for i, (ins, value) in enumerate(steps) if ins == "COPY" and value.startswith("reactor "))
    assert source > deps


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment set up by the Dockerfile's own steps, run as written."""
    root = tmp_path_factory.mktemp("image")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    workdir = root / "app"
    workdir.mkdir()
    env = {**os.environ, "PATH": f"{root / 'venv' / 'bin'}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    for instruction, value in instructions():
        if instruction == "COPY":
            source, target = value.split()
            copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
            copy(ROOT / source, workdir / target)
        elif instruction == "RUN" and not value.startswith("useradd"):
            subprocess.run(value, shell=True, cwd=workdir, env=env, check=True, capture_output=True)
    (workdir / "worker.py").write_text(APP)  # as the user's own image adds it
    return root


def test_the_image_has_reactor_and_no_dev_extras(image: Path) -> None:
    listed = subprocess.run(
        [str(image / "venv" / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"reactor", "supabase", "realtime", "httpx", "anyio", "loguru", "aiohttp", "jinja2"} <= names
    assert not names & {"pytest", "pgserver", "ruff", "playwright"}


@pytest.mark.anyio
async def test_the_images_reactor_run_completes_a_job_and_answers_its_healthcheck(
    image: Path, stack, db: asyncpg.Connection
) -> None:
    port = _free_port()
    env = worker_env(
        stack, REACTOR_APP="worker:app", REACTOR_HEALTH_PORT=str(port), REACTOR_LOG_FORMAT="json"
    )
    command = [str(image / "venv" / "bin" / "reactor"), "run"]  # ENTRYPOINT with the empty CMD
    async with await anyio.open_process(command, env=env, cwd=image / "app") as process:
        worker = WorkerProcess(process)
        async with anyio.create_task_group() as group:
            group.start_soon(worker.collect)
            job_id = await insert(db, "containerised")
            done = await status_is(db, job_id, "completed")
            assert await _healthcheck(image, port) == 0
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0
    assert json.loads(done["result"]) == {"ran_in": "the image's environment"}
    assert await _healthcheck(image, port) != 0  # and it fails once the worker is gone
    logged = [json.loads(line) for line in worker.output.splitlines() if line.startswith("{")]
    [completed] = [line for line in logged if line.get("message") == "job completed"]
    assert completed["job_id"] == job_id and completed["outcome"] == "completed"
    assert set(completed) == set(_sample_log_line())  # the line docs/deploy.md shows is this shape


def test_reactor_run_without_an_app_or_reactor_app_says_how_to_name_one(image: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "REACTOR_APP"}
    done = subprocess.run(
        [str(image / "venv" / "bin" / "reactor"), "run"],
        env=env,
        cwd=image / "app",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "reactor run: name the app as module:attribute, or set REACTOR_APP"
    ]


def _sample_log_line() -> dict:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    [line] = re.findall(r"```json\n(.*?)```", doc, re.S)
    return json.loads(line)


async def _healthcheck(image: Path, port: int) -> int:
    command = [str(image / "venv" / "bin" / "python"), *healthcheck_command()[1:]]
    done = await anyio.run_process(command, env={"REACTOR_HEALTH_PORT": str(port)}, check=False)
    return done.returncode


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
