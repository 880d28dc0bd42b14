"""A worker served on the in-memory store, for the unit tests of the worker's core (tests/unit):
quick settings, and a context that runs the worker and stops it, failing a run that hangs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from reactor import Reactor
from reactor.config import Config, load
from reactor.memory import MemoryStore

QUICK = {
    "supabase_url": "http://memory.invalid",
    "service_key": "unused-by-the-memory-store",
    "realtime": False,
    "lease_seconds": 3,
    "poll_fast_seconds": 0.05,
    "poll_slow_seconds": 0.05,
    "reap_seconds": 0.1,
    "stats_seconds": 30.0,
    "grace_seconds": 2.0,
    "retry_base_seconds": 0.01,
    "retry_cap_seconds": 0.01,
    "health_port": None,
    "worker_id": "unit",
}

# A test that runs and stops a worker takes a second or two; one that takes this long is hung (a
# broken worker never stops, or never starts the job a test waits for) and fails rather than waits.
HUNG_SECONDS = 30.0


def config(**overrides: Any) -> Config:
    return load({}, **{**QUICK, **overrides})


@asynccontextmanager
async def serving(app: Reactor, store: MemoryStore, **overrides: Any) -> AsyncIterator[Reactor]:
    app.worker = None
    with anyio.fail_after(HUNG_SECONDS):
        async with anyio.create_task_group() as group:
            group.start_soon(app.serve, config(**overrides), False, store)
            try:
                yield app
            finally:
                app.stop()
