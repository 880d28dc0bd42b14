"""podman as it works on these machines: Debian's podman, runc and debootstrap; builds with
`--isolation=chroot`, in Docker's format (OCI's has no HEALTHCHECK); containers on Debian's runc
with explicit limits (crun, and the limits podman would ask for by default, are refused here)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import anyio

TOOLS = ("podman", "runc", "debootstrap")  # each the name of its Debian package too
SBIN = ("/usr/sbin", "/sbin")
# podman runs its containers' monitor with at most 32768 processes here, and a container cannot be
# given more; a worker needs a few dozen threads.
NPROC = 4096


def tool(name: str) -> str:
    found = _which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed")
    return found


def missing() -> list[str]:
    return [name for name in TOOLS if _which(name) is None]


def install() -> str | None:
    """Install the missing tools with apt-get; None once all are there, else why they are not."""
    if not missing():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"missing {', '.join(missing())}, which apt-get cannot install here (it needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing()]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {done.stderr.strip()[-1500:]}"
    return f"{', '.join(missing())} still missing after apt-get install" if missing() else None


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [tool("podman"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {args[0]} failed ({done.returncode}): {done.stderr.strip()[-3000:]}")
    return done


async def apodman(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """podman without blocking the event loop, which serves the local stack in the tests."""
    done = await anyio.run_process([tool("podman"), *args], check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {args[0]} failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
    return done


def build(context: Path, *tags: str) -> str:
    """`podman build` of the context's Dockerfile as it is, nothing pulled; the image's id."""
    with tempfile.TemporaryDirectory() as scratch:
        iidfile = Path(scratch) / "iid"
        options = ["--pull=never", "--isolation=chroot", "--format", "docker", "--iidfile", str(iidfile)]
        options += [item for tag in tags for item in ("--tag", tag)]
        podman("build", *options, str(context), timeout=1800)
        return iidfile.read_text().strip().removeprefix("sha256:")


def run_options() -> list[str]:
    """What `podman run` needs here beyond what `docker run` would: Debian's runc, the limits this
    machine allows, and the host's network (no bridge: the local stack listens on 127.0.0.1)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [
        "--runtime",
        tool("runc"),
        "--ulimit",
        f"nofile={soft}:{hard}",
        "--ulimit",
        f"nproc={NPROC}:{NPROC}",
        "--network",
        "host",
    ]


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
