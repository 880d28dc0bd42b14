"""Fixtures every test may ask for (a pytest plugin, named in tests/conftest.py): a local stack over
the test's database, and supabase-js with Node, installed once into a cache outside the repository."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from reactor.devstack.stack import Stack


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    from reactor.devstack.stack import serve  # the worker tests' only tie to the devstack

    async with serve(database_url, port=0) as running:
        yield running


JS_DIR = Path(__file__).resolve().parent.parent / "devstack" / "js"
CACHE = Path(os.environ.get("REACTOR_JS_CACHE", Path.home() / ".cache" / "reactor-js"))
NO_JS = "SUPABASE-JS NOT CHECKED: "


@pytest.fixture(scope="session")
def js_dir() -> Path:
    """A directory with supabase-js and Node 22 installed, the round-trip script beside them."""
    package = (JS_DIR / "package.json").read_bytes()
    target = CACHE / hashlib.sha256(package).hexdigest()[:16]
    node = target / "node_modules" / ".bin" / "node"
    if not node.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(NO_JS + "npm is not on PATH, so supabase-js and Node 22 cannot be installed")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(JS_DIR / "package.json", target / "package.json")
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0 or not node.exists():
            pytest.fail(NO_JS + f"npm install failed (offline?): {done.stderr[-1500:]}")
    shutil.copy(JS_DIR / "roundtrip.mjs", target / "roundtrip.mjs")
    return target
