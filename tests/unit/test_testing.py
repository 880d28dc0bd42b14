"""reactor.testing runs a handler with no database, through the worker's own outcome rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from reactor import Job, PermanentError, Reactor, RetryLater
from reactor.retry import RetryPolicy
from reactor.testing import perform

pytestmark = pytest.mark.anyio
app = Reactor()


@app.handler("echo")
async def echo(job: Job) -> dict:
    await job.set_progress(50, "halfway")
    return {"payload": job.payload, "owner": job.user_id, "attempt": job.attempt}


@app.handler("flaky", retry=RetryPolicy(base_seconds=60, cap_seconds=60))
async def flaky(job: Job) -> None:
    raise ValueError("downstream said no")


@app.handler("later")
async def later(job: Job) -> None:
    raise RetryLater(at=datetime(2030, 1, 1, tzinfo=UTC))


@app.handler("doomed")
async def doomed(job: Job) -> None:
    raise PermanentError("no such account")


@app.handler("sleepy", timeout=0.05)
async def sleepy(job: Job) -> None:
    await anyio.sleep(10)


@app.handler("nan")
async def nan(job: Job) -> float:
    return float("nan")


@app.handler("capped", max_attempts=2)
async def capped(job: Job) -> None:
    raise RuntimeError("again")


async def test_a_result_completes_the_job_and_progress_is_recorded() -> None:
    done = await perform(app, "echo", {"to": "ada"}, user_id="u-1", attempt=2)
    assert (done.outcome.kind, done.outcome.result) == (
        "completed",
        {"payload": {"to": "ada"}, "owner": "u-1", "attempt": 2},
    )
    assert done.progress == [(50, "halfway")]


async def test_an_exception_retries_on_the_handlers_own_backoff() -> None:
    before = datetime.now(UTC)
    done = await perform(app, "flaky", policy=RetryPolicy(base_seconds=0.001, cap_seconds=0.001))
    assert (done.outcome.kind, done.outcome.error) == ("retried", "ValueError: downstream said no")
    assert before <= done.outcome.retry_at <= before + timedelta(seconds=61)
    assert done.outcome.item() == {
        "error": "ValueError: downstream said no",
        "retry_at": done.outcome.retry_at.isoformat(),
    }


async def test_the_last_attempt_fails_for_good_and_the_handlers_limit_counts() -> None:
    assert (await perform(app, "flaky", attempt=5, max_attempts=5)).outcome.kind == "failed"
    capped_done = await perform(app, "capped", attempt=2, max_attempts=5)
    assert (capped_done.outcome.kind, capped_done.outcome.error) == ("failed", "RuntimeError: again")


@pytest.mark.parametrize(
    "job_type, kind, error",
    [
        ("later", "retried", "retry requested at 2030-01-01T00:00:00+00:00"),
        ("doomed", "failed", "PermanentError: no such account"),
        ("sleepy", "retried", "timed out after 0.05 s"),
        (
            "nan",
            "failed",
            "the handler's result is not JSON: Out of range float values are not JSON compliant",
        ),
    ],
)
async def test_each_way_a_handler_ends_is_what_the_worker_records(
    job_type: str, kind: str, error: str
) -> None:
    done = await perform(app, job_type)
    assert (done.outcome.kind, done.outcome.error) == (kind, error)


async def test_an_unknown_job_type_is_named() -> None:
    with pytest.raises(LookupError, match="no handler for job type 'nope' in table 'jobs'"):
        await perform(app, "nope")


@app.handler("unprintable")
async def unprintable(job: Job) -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    raise Odd()


async def test_a_job_past_its_attempts_fails_without_running() -> None:
    done = await perform(app, "echo", attempt=6, max_attempts=5)
    assert (done.outcome.kind, done.outcome.error, done.progress) == (
        "failed",
        "attempts exhausted: attempt 6 of at most 5",
        [],
    )
    assert done.outcome.item() == {"error": "attempts exhausted: attempt 6 of at most 5", "permanent": True}


async def test_a_retry_at_a_time_keeps_that_time() -> None:
    done = await perform(app, "later")
    assert done.outcome.retry_at == datetime(2030, 1, 1, tzinfo=UTC)


async def test_outcomes_become_the_items_the_worker_sends() -> None:
    assert (await perform(app, "echo")).outcome.item() == {
        "result": {"payload": {}, "owner": None, "attempt": 1}
    }
    assert (await perform(app, "doomed")).outcome.item() == {
        "error": "PermanentError: no such account",
        "permanent": True,
    }


async def test_an_exception_whose_message_cannot_be_made_is_still_recorded() -> None:
    done = await perform(app, "unprintable")
    assert done.outcome.error == "Odd: (its message could not be read)"
