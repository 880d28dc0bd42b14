"""The chaos run's worker app: `reactor run tests.chaos.app:app`.

Each run of a handler appends one line to the file named by CHAOS_RUNS, with the time it began,
before it does its work, so a run is on record even when its worker is killed mid-job. Workers have no database connection;
a local append-only file is a side table that no injected fault can reach. The result names the
lease the run held, so the audit can tell whether a completion came from the job's current owner.
"""

from __future__ import annotations

import json
import os
import time

import anyio

from reactor import Job, Reactor

app = Reactor()


def record_run(job: Job, worker: str) -> None:
    line = json.dumps(
        {
            "id": job.id,
            "attempt": job.attempt,
            "lease_token": job.lease_token,
            "worker": worker,
            "at": time.time(),
        }
    )
    # One write(2) to an O_APPEND file: lines from concurrent workers never interleave.
    fd = os.open(os.environ["CHAOS_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@app.handler("chaos", timeout=60)
async def chaos(job: Job) -> dict:
    """Takes payload["seconds"], a random time drawn from the run's seed."""
    worker = os.environ["REACTOR_WORKER_ID"]
    record_run(job, worker)
    await anyio.sleep(float(job.payload["seconds"]))
    return {"worker": worker, "attempt": job.attempt, "lease_token": job.lease_token}
