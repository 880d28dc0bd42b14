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


PROFILE_VARIABLE = "REACTOR_TEST_PROFILE"  # local (the default), hosted, or hosted:pro


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    """The local stack, with the profile REACTOR_TEST_PROFILE names: the whole suite can run
    against hosted Supabase's limits with REACTOR_TEST_PROFILE=hosted (or hosted:pro, hosted:team)."""
    from reactor.devstack.profile import Profile  # the worker tests' only ties to the devstack
    from reactor.devstack.stack import serve

    name, _, plan = os.environ.get(PROFILE_VARIABLE, "local").partition(":")
    if name not in ("local", "hosted"):
        pytest.fail(f"{PROFILE_VARIABLE} must be local, hosted or hosted:<plan>, got {name!r}")
    profile = Profile.hosted(plan or "free") if name == "hosted" else Profile.local()
    async with serve(database_url, port=0, profile=profile) as running:
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
