"""A local stand-in for the Dockerfile's base image, `python:3.11-slim`, for machines that reach
Debian's packages but no container registry.

A minimal Debian bookworm root filesystem from debootstrap with Debian's Python 3.11, venv, pip
and CA certificates; `python` and `pip` in /usr/local/bin as the real image has them; pip allowed
to install outside a venv (no EXTERNALLY-MANAGED marker), as there; and this machine's CA bundle,
so that pip in the build trusts what this machine trusts. It is imported into podman under the
base image's own name, labelled with a hash of this recipe, so the Dockerfile builds unmodified.

The root filesystem is kept as a tar under the user's cache (keyed by the same hash), so a machine
whose podman store was emptied imports it again without running debootstrap. A `python:3.11-slim`
already in the store without the label is someone's real base image: it is used as found.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.image.podman import podman, tool

TAG = "docker.io/library/python:3.11-slim"
LABEL = "reactor.base-stand-in"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reactor-image"
CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)


def recipe_key() -> str:
    return hashlib.sha256(Path(__file__).read_bytes() + CA_BUNDLE.read_bytes()).hexdigest()[:16]


def ensure() -> str:
    """Make sure the store has a base image for the Dockerfile; say which one it is."""
    key = recipe_key()
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one preparation at a time, whoever else runs the test
        found = _label()
        if found == key:
            return f"stand-in {key}, already in the podman store"
        if found == "":
            return f"{TAG} as found in the podman store (not the stand-in)"
        tar = CACHE / key / "rootfs.tar"
        how = "from the cached root filesystem"
        if not tar.exists():
            for former in (path for path in CACHE.iterdir() if path.is_dir() and path.name != key):
                shutil.rmtree(former)  # an earlier recipe's root filesystem
            _debootstrap(tar)
            how = "debootstrapped"
        podman(
            "import",
            *[item for change in (*CHANGES, f"LABEL {LABEL}={key}") for item in ("--change", change)],
            str(tar),
            TAG,
            timeout=600,
        )
        return f"stand-in {key}, {how} and imported"


def _label() -> str | None:
    """The recipe key the base image carries: None without the image, "" for an unlabelled one."""
    done = podman("image", "inspect", "--format", "{{json .Labels}}", TAG, check=False)
    if done.returncode != 0:
        return None
    return (json.loads(done.stdout) or {}).get(LABEL, "")


def _debootstrap(tar: Path) -> None:
    tar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tar.parent) as work:
        root = Path(work) / "rootfs"
        command = [
            tool("debootstrap"),
            "--variant=minbase",
            f"--include={PACKAGES}",
            SUITE,
            str(root),
            MIRROR,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"debootstrap failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        _fit(root)
        partial = tar.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(tar)


def _fit(root: Path) -> None:
    """What makes Debian's Python stand where and as the python image has it."""
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for name, target in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
        (root / "usr/local/bin" / name).symlink_to(target)
    shutil.copy(CA_BUNDLE, root / CA_BUNDLE.relative_to("/"))
    for leftover in (*root.glob("var/cache/apt/archives/*.deb"), *root.glob("var/lib/apt/lists/*_*")):
        leftover.unlink()
