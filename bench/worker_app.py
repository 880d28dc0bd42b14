"""The worker that bench/worker.py runs: handlers that do nothing, stamp their start, or sleep."""

from __future__ import annotations

import time

import anyio

from reactor import Job, Reactor

app = Reactor()


@app.handler("noop")
async def noop(job: Job) -> None:
    return None


@app.handler("stamp")
async def stamp(job: Job) -> dict:
    return {"started": time.time()}


@app.handler("sleep")
async def sleep(job: Job) -> None:
    await anyio.sleep(float(job.payload.get("seconds", 30)))
