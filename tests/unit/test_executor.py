"""What `executor.call` makes of the ways a handler ends, through `reactor.testing.perform`, which
runs the same code the worker runs."""

from __future__ import annotations

from typing import Any

import pytest
from loguru import logger

from reactor import Job, Reactor, RetryLater, Snooze
from reactor.retry import RetryPolicy
from reactor.testing import perform

pytestmark = pytest.mark.anyio


async def test_a_snooze_keeps_its_reason() -> None:
    app = Reactor()

    @app.handler("waits")
    async def waits(job: Job) -> None:
        raise Snooze(30)

    done = await perform(app, "waits")
    assert (done.outcome.kind, done.outcome.error) == ("snoozed", "retry requested in 30 s")


async def test_a_retry_later_on_the_last_attempt_fails_for_good() -> None:
    app = Reactor()

    @app.handler("later", max_attempts=2)
    async def later(job: Job) -> None:
        raise RetryLater(30)

    first = await perform(app, "later", attempt=1, policy=RetryPolicy(1, 1))
    last = await perform(app, "later", attempt=2, policy=RetryPolicy(1, 1))
    assert first.outcome.kind == "retried"
    assert (last.outcome.kind, last.outcome.error) == ("failed", "retry requested in 30 s")


async def test_a_handlers_exception_is_logged_with_its_traceback_for_the_job() -> None:
    app = Reactor()
    lines: list[dict[str, Any]] = []
    sink = logger.add(
        lambda m: lines.append({"exception": m.record["exception"], "message": m.record["message"]}),
        level="DEBUG",
    )

    @app.handler("breaks")
    async def breaks(job: Job) -> None:
        raise KeyError("missing")

    try:
        done = await perform(app, "breaks")
    finally:
        logger.remove(sink)
    assert done.outcome.error == "KeyError: 'missing'"
    raised = [line for line in lines if line["message"] == "handler raised"]
    assert len(raised) == 1 and isinstance(raised[0]["exception"].value, KeyError)
