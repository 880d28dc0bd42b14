"""The image built for real from the repository's Dockerfile, unmodified, with podman; a worker image
built on it as the Dockerfile's header shows; both run against the local stack.

It runs by default and in CI. Where podman, runc or debootstrap are missing it installs them with
apt-get; it is skipped, saying why, only where that cannot be done, and fails instead under CI.
The base is a local stand-in for python:3.11-slim unless the real one is in podman's store
(base.py), and podman runs the HEALTHCHECK on demand (`podman healthcheck run`): its timer for
periodic checks needs systemd, which these machines do not run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.image import base, podman
from tests.image.podman import apodman, run_options
from tests.support.worker import insert, row, status_is, wait_until, worker_env

if TYPE_CHECKING:
    from reactor.devstack.stack import Stack

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
NOT_CHECKED = "IMAGE NOT CHECKED: "
GRACE_SECONDS = 10
HANDLERS = """
import os
import pwd

import anyio

from reactor import Job, Reactor

app = Reactor()


@app.handler("containerised")
async def containerised(job: Job) -> dict:
    await anyio.sleep(job.payload.get("seconds", 0))
    return {"user": pwd.getpwuid(os.getuid()).pw_name, "uid": os.getuid()}
"""
DISTRIBUTIONS = (
    "import json, importlib.metadata as m; "
    "print(json.dumps([[d.metadata['Name'], d.requires or []] for d in m.distributions()]))"
)


@pytest.fixture(scope="module")
def reactor_image(report: Callable[[str], None]) -> str:
    why = podman.install()
    if why is not None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(NOT_CHECKED + why)
    started = time.monotonic()
    report(f"base: {base.ensure()} ({time.monotonic() - started:.0f} s)")
    started = time.monotonic()
    image = podman.build(ROOT)
    report(f"reactor image {image[:12]} built in {time.monotonic() - started:.0f} s")
    return _tag(image, "localhost/reactor-test")


@pytest.fixture(scope="module")
def worker_image(reactor_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("worker-image")
    (context / "worker.py").write_text(HANDLERS)
    header = _dockerfile_header()
    assert header.splitlines()[0] == "FROM reactor"  # the image as `podman build -t reactor .` tags it
    (context / "Dockerfile").write_text(header.replace("FROM reactor", f"FROM {reactor_image}", 1))
    return _tag(podman.build(context), "localhost/reactor-test-worker")


def test_the_image_holds_what_reactor_run_needs_and_no_dev_only_package(
    reactor_image: str, report: Callable[[str], None]
) -> None:
    installed = _distributions(reactor_image)
    added = set(installed) - set(_distributions(base.TAG))
    needed = _needed(installed, "reactor")
    assert {"reactor", "supabase", "realtime", "httpx", "loguru", "asyncpg"} <= added
    assert needed - set(installed) == set()  # every runtime requirement, down the tree
    assert added - needed == set()  # and nothing the Dockerfile installed besides
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev_only = {canonicalize_name(Requirement(spec).name) for specs in extras.values() for spec in specs}
    dev_only -= needed
    assert {"pytest", "ruff", "pgserver", "playwright", "dockerfile-parse"} <= dev_only
    assert dev_only & set(installed) == set()
    size, base_size = (_inspect_image(image)["Size"] for image in (reactor_image, base.TAG))
    report(f"image size: {size / 1e6:.0f} MB, of which the base {base_size / 1e6:.0f} MB")


def test_the_image_runs_reactor_run_which_says_how_to_name_the_app(reactor_image: str) -> None:
    config = _inspect_image(reactor_image)
    assert config["Config"]["Entrypoint"] == ["reactor", "run"]
    assert config["Config"]["StopSignal"] == "SIGTERM"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])  # kept: Docker's format, not OCI's
    done = podman.podman("run", "--rm", "--no-healthcheck", *run_options(), reactor_image, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "reactor run: name the app as module:attribute, or set REACTOR_APP"


@pytest.mark.anyio
async def test_the_worker_image_runs_jobs_as_its_user_reports_health_and_drains_on_sigterm(
    worker_image: str, stack: Stack, db: asyncpg.Connection, report: Callable[[str], None]
) -> None:
    name = f"reactor-test-{uuid.uuid4().hex[:8]}"
    await apodman("run", "--detach", "--name", name, *run_options(), *_env(stack), worker_image)
    try:
        first = await status_is(db, await insert(db, "containerised"), "completed", timeout=60)
        assert json.loads(first["result"]) == {"user": "reactor", "uid": 10001}  # not root, nor the host's
        pid1 = (await apodman("exec", name, "cat", "/proc/1/cmdline")).stdout.split(b"\0")
        assert pid1[1].endswith(b"/reactor") and pid1[2] == b"run"  # exec form: podman's signals reach it
        await _healthy_then_unhealthy_once_stopped(name, report)
        second = await insert(db, "containerised", {"seconds": 3})
        await status_is(db, second, "processing", timeout=30)
        started = time.monotonic()
        await apodman("stop", "--time", "45", name)  # SIGTERM, the image's STOPSIGNAL; SIGKILL after 45 s
        stopped = time.monotonic() - started
        assert (await row(db, second))["status"] == "completed"  # drained, not handed back
        assert stopped < GRACE_SECONDS
        assert (await _inspect_container(name))["State"]["ExitCode"] == 0
        report(f"podman stop: the running job finished and the worker exited 0 in {stopped:.1f} s")
        logs = await apodman("logs", name)
    except BaseException as failure:
        failure.add_note(f"container log:\n{_output(await apodman('logs', name, check=False))[-4000:]}")
        raise
    finally:
        await apodman("rm", "--force", name, check=False)

    text = _output(logs)
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    completed = [line for line in lines if line["message"] == "job completed"]
    assert [line["job_id"] for line in completed] == [first["id"], second]
    assert {tuple(sorted(line)) for line in completed} == {tuple(sorted(_sample_log_line()))}
    messages = [line["message"] for line in lines]
    assert "Realtime live" in messages  # Realtime reached from inside the container
    assert messages.index("received SIGTERM") < messages.index("worker stopped")
    assert stack.keys.service_role not in text
    on = {
        stream: len(output.splitlines())
        for stream, output in (("stdout", logs.stdout), ("stderr", logs.stderr))
    }
    report(
        f"container log: {len(lines)} lines, all JSON ({on['stdout']} on stdout, {on['stderr']} on stderr)"
    )
    assert on == {"stdout": len(lines), "stderr": 0}  # JSON logs on stdout, as log shippers expect


async def _healthy_then_unhealthy_once_stopped(name: str, report: Callable[[str], None]) -> None:
    """podman runs the image's HEALTHCHECK, with its timeout, start period and retries, while the
    worker answers; then with the worker stopped (SIGSTOP: its container runs on, as it does when
    a worker hangs) until podman calls the container unhealthy; then with the worker going again."""
    await wait_until(lambda: _healthcheck_passes(name), timeout=30)
    assert await _health(name) == "healthy"
    await apodman("kill", "--signal", "SIGSTOP", name)
    started, failures = time.monotonic(), 0
    while await _health(name) != "unhealthy":
        assert not await _healthcheck_passes(name), "HEALTHCHECK passed with the worker stopped"
        failures += 1
        assert time.monotonic() - started < 120, "never unhealthy"
    report(f"HEALTHCHECK: unhealthy after {failures} failed runs, {time.monotonic() - started:.0f} s")
    await apodman("kill", "--signal", "SIGCONT", name)
    assert await _healthcheck_passes(name)
    assert await _health(name) == "healthy"


def _dockerfile_header() -> str:
    """The image the Dockerfile's opening comment tells users to build on it, which docs/deploy.md shows too."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    header = "".join(line.removeprefix("#   ") + "\n" for line in lines if line.startswith("#   "))
    [shown] = re.findall(r"```dockerfile\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    assert header == shown
    return header


def _tag(image: str, repository: str) -> str:
    """A tag named after the content, so that test runs side by side each run what they built."""
    tag = f"{repository}:{image[:12]}"
    podman.podman("tag", image, tag)
    return tag


def _env(stack: Stack) -> list[str]:
    env = worker_env(
        stack,
        REACTOR_HEALTH_PORT=str(_free_port()),
        REACTOR_LOG_FORMAT="json",
        REACTOR_REALTIME="on",
        REACTOR_GRACE_SECONDS=str(GRACE_SECONDS),
    )
    return [f"--env={key}={value}" for key, value in env.items() if key.startswith(("SUPABASE_", "REACTOR_"))]


def _distributions(image: str) -> dict[str, list[str]]:
    """The image's Python distributions and what each requires, as importlib.metadata finds them."""
    command = ("run", "--rm", "--no-healthcheck", *run_options(), "--entrypoint", "python")
    found: dict[str, list[str]] = {}
    for name, requires in json.loads(podman.podman(*command, image, "-c", DISTRIBUTIONS).stdout):
        found.setdefault(canonicalize_name(name), []).extend(requires)
    return found


def _needed(distributions: dict[str, list[str]], root: str) -> set[str]:
    """root and everything it requires, down the tree, with the extras each requirement asks for."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(root, frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for spec in distributions.get(name, []):
            requirement = Requirement(spec)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in ("", *extras)):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


def _inspect_image(image: str) -> dict:
    return json.loads(podman.podman("image", "inspect", image).stdout)[0]


async def _inspect_container(name: str) -> dict:
    return json.loads((await apodman("container", "inspect", name)).stdout)[0]


async def _healthcheck_passes(name: str) -> bool:
    return (await apodman("healthcheck", "run", name, check=False)).returncode == 0


async def _health(name: str) -> str:
    return (await apodman("inspect", "--format", "{{.State.Health.Status}}", name)).stdout.decode().strip()


def _output(done: subprocess.CompletedProcess[bytes]) -> str:
    return (done.stdout + done.stderr).decode(errors="replace")


def _sample_log_line() -> dict:
    [line] = re.findall(r"```json\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    return json.loads(line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
