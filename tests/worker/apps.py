"""Worker apps that the process tests run with `reactor run tests.worker.apps:app`."""

from __future__ import annotations

import os

import anyio

from reactor import Job, PermanentError, Reactor

app = Reactor()


@app.handler("sleep", timeout=120)
async def sleep(job: Job) -> dict:
    """Sleeps payload["seconds"] on its first attempt only, and says which worker finished it."""
    if job.attempt == 1:
        await anyio.sleep(float(job.payload.get("seconds", 0)))
    return {"pid": os.getpid(), "attempt": job.attempt}


@app.handler("echo")
async def echo(job: Job) -> dict:
    return {"echo": job.payload}


@app.handler("leaky")
async def leaky(job: Job) -> None:
    """A careless handler that puts the service key in a log line and in an error."""
    key = os.environ["SUPABASE_SERVICE_ROLE_KEY"]
    job.logger.info(f"calling out with {key}")
    raise PermanentError(f"request with key {key} refused")


@app.handler("paced", rate="2/s")
async def paced(job: Job) -> dict:
    """Calls an API that allows two requests a second, from however many workers."""
    return {"pid": os.getpid()}


@app.handler("fair", per_user=1)
async def fair(job: Job) -> None:
    """A long job of which each user may have one running at a time."""
    await anyio.sleep(0.3)


scheduled = Reactor()


@scheduled.cron("* * * * * *", name="every-second", catch_up=30)
@scheduled.handler("tick")
async def tick(job: Job) -> dict:
    """Enqueued every second; its window outlasts any outage in the tests."""
    return {"pid": os.getpid(), "for": job.run_at.isoformat()}


@scheduled.cron("* * * * * *", name="short-memory", catch_up=2)
@scheduled.handler("tock")
async def tock(job: Job) -> dict:
    """Enqueued every second, but only times at most 2 s old are caught up after an outage."""
    return {"pid": os.getpid(), "for": job.run_at.isoformat()}
