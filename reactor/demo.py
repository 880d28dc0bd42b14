"""The demo worker `reactor dev` runs: a few handlers that show progress, retries and scheduling."""

from __future__ import annotations

import anyio

from reactor import Job, Reactor, RetryLater

app = Reactor()


@app.handler("send_email", timeout=30, max_attempts=5)
async def send_email(job: Job) -> dict:
    await job.set_progress(50, "rendering")
    await anyio.sleep(0.2)
    return {"sent": True, "to": job.payload.get("to")}


@app.handler("resize_image", timeout=30)
async def resize_image(job: Job) -> dict:
    for percent in (25, 50, 75):
        await job.set_progress(percent, f"resized {percent}%")
        await anyio.sleep(0.1)
    return {"width": job.payload.get("width", 640)}


@app.handler("flaky_webhook", max_attempts=3)
async def flaky_webhook(job: Job) -> dict:
    if job.attempt == 1:
        raise RetryLater(1.0)  # the endpoint said 503: try again in a second
    return {"delivered_on_attempt": job.attempt}


# (job_type, payload, seconds from now) inserted by `reactor dev`
DEMO_JOBS = [
    ("send_email", {"to": "ada@example.com"}, 0),
    ("resize_image", {"width": 320}, 0),
    ("flaky_webhook", {"url": "https://example.com/hook"}, 0),
    ("send_email", {"to": "grace@example.com"}, 2),
]
