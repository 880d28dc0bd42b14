"""The worker the dashboard's browser tests run as real `reactor run` processes."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from reactor import Job, PermanentError, Reactor

app = Reactor()
BROKEN_FLAG = "REACTOR_TEST_BROKEN_FLAG"  # a path: while the file exists, charges fail for good


def _broken() -> bool:
    return Path(os.environ[BROKEN_FLAG]).exists()


@app.handler("charge")
async def charge(job: Job) -> dict:
    if _broken():
        raise PermanentError(f"card processor refused order {job.payload['order']}: 502 Bad Gateway")
    return {"charged": job.payload["order"]}


@app.handler("report")
async def report(job: Job) -> dict:
    if _broken():
        raise PermanentError("report template missing")
    return {"pages": 3}


@app.handler("render", timeout=60)
async def render(job: Job) -> dict:
    """Reports half its progress, then works for payload["seconds"]."""
    await job.set_progress(50, "rendering frames")
    await anyio.sleep(float(job.payload["seconds"]))
    return {"frames": 240}
