"""The worker's core (dispatcher, runner, reporter, lease keeper, ticker, poller) run whole on the
in-memory store: no database, no local stack, so these are fast enough to run against every
mutant of the core (docs/reliability.md, "Mutation testing"). The same behaviours are proven on
the local stack by tests/worker; tests/contract/test_store.py holds the in-memory store to the
SQL contract."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from loguru import logger

from reactor import Job, PermanentError, Reactor, RetryLater, Snooze
from reactor.memory import MemoryStore
from reactor.store import Rejected, Unavailable
from tests.support.memory_worker import serving

pytestmark = pytest.mark.anyio


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `check` until it is truthy: a safety net, not a timing assertion."""
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.01)
    return value


def status(store: MemoryStore, job_id: int) -> str:
    return store.row("jobs", job_id)["status"]


async def test_a_job_runs_and_its_result_is_recorded() -> None:
    app, store = Reactor(), MemoryStore()

    @app.handler("echo")
    async def echo(job: Job) -> object:
        return {"got": job.payload, "attempt": job.attempt}

    job_id = await store.enqueue("jobs", {"job_type": "echo", "payload": {"n": 1}})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "completed")
    assert store.row("jobs", job_id)["result"] == {"got": {"n": 1}, "attempt": 1}
    assert app.metrics.jobs[("jobs", "echo", "completed")] == 1


async def test_a_raising_handler_is_retried_until_its_attempts_are_spent() -> None:
    app, store = Reactor(), MemoryStore()
    attempts: list[int] = []

    @app.handler("flaky")
    async def flaky(job: Job) -> None:
        attempts.append(job.attempt)
        raise ValueError(f"broke on attempt {job.attempt}")

    job_id = await store.enqueue("jobs", {"job_type": "flaky", "max_attempts": 3})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "failed")
    assert attempts == [1, 2, 3]
    assert store.row("jobs", job_id)["last_error"] == "ValueError: broke on attempt 3"


async def test_a_permanent_error_fails_the_job_at_once() -> None:
    app, store = Reactor(), MemoryStore()

    @app.handler("bad")
    async def bad(job: Job) -> None:
        raise PermanentError("card declined")

    job_id = await store.enqueue("jobs", {"job_type": "bad", "max_attempts": 5})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "failed")
    row = store.row("jobs", job_id)
    assert (row["attempts"], row["last_error"]) == (1, "PermanentError: card declined")


async def test_a_handler_past_its_timeout_is_cancelled_and_retried() -> None:
    app, store = Reactor(), MemoryStore()
    runs: list[int] = []

    @app.handler("slow", timeout=0.2)
    async def slow(job: Job) -> str:
        runs.append(job.attempt)
        if job.attempt == 1:
            await anyio.sleep(30)
        return "second time lucky"

    job_id = await store.enqueue("jobs", {"job_type": "slow"})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "completed")
    assert runs == [1, 2]
    assert store.row("jobs", job_id)["last_error"] == "timed out after 0.2 s"


async def test_no_more_jobs_run_at_once_than_the_concurrency() -> None:
    app, store = Reactor(), MemoryStore()
    now_running, most = 0, 0

    @app.handler("work")
    async def work(job: Job) -> None:
        nonlocal now_running, most
        now_running += 1
        most = max(most, now_running)
        await anyio.sleep(0.02)
        now_running -= 1

    ids = [await store.enqueue("jobs", {"job_type": "work"}) for _ in range(20)]
    async with serving(app, store, concurrency=3):
        await until(lambda: all(status(store, i) == "completed" for i in ids))
    assert most == 3


async def test_a_retry_later_starts_on_its_timer_not_on_the_next_tick() -> None:
    app, store = Reactor(), MemoryStore()
    started: list[float] = []

    @app.handler("later")
    async def later(job: Job) -> None:
        started.append(time.monotonic())
        if job.attempt == 1:
            raise RetryLater(0.3)

    job_id = await store.enqueue("jobs", {"job_type": "later"})
    async with serving(app, store, poll_fast_seconds=60, poll_slow_seconds=60, reap_seconds=60):
        await until(lambda: status(store, job_id) == "completed")
    assert len(started) == 2
    assert 0.3 <= started[1] - started[0] < 30  # on the timer; the next tick is a minute away


async def test_a_snoozed_job_runs_again_on_its_timer_without_spending_an_attempt() -> None:
    app, store = Reactor(), MemoryStore()
    attempts: list[int] = []

    @app.handler("waits")
    async def waits(job: Job) -> None:
        attempts.append(job.attempt)
        if len(attempts) < 3:
            raise Snooze(0.2)

    job_id = await store.enqueue("jobs", {"job_type": "waits", "max_attempts": 1})
    async with serving(app, store, poll_fast_seconds=60, poll_slow_seconds=60, reap_seconds=60):
        await until(lambda: status(store, job_id) == "completed")
    assert attempts == [1, 1, 1]  # one attempt allowed, three runs: snoozes spend none
    assert app.metrics.jobs[("jobs", "waits", "snoozed")] == 2


async def test_a_lost_lease_cancels_the_handler_and_nothing_is_reported() -> None:
    app, store = Reactor(), MemoryStore()
    cancelled, held = anyio.Event(), []

    @app.handler("long")
    async def long(job: Job) -> None:
        store.tables["jobs"][
            job.id
        ].lease_token = "00000000-0000-4000-8000-00000000beef"  # reaped, re-claimed
        held.append(await job.set_progress(10))
        try:
            await anyio.sleep(30)
        finally:
            cancelled.set()

    job_id = await store.enqueue("jobs", {"job_type": "long"})
    async with serving(app, store):
        await until(cancelled.is_set)
    assert held == [False]
    assert status(store, job_id) == "processing"
    assert not any(
        function in ("reactor_complete", "reactor_fail", "reactor_release") for function, _ in store.calls
    )
    assert app.metrics.jobs[("jobs", "long", "lost")] == 1


async def test_progress_is_written_to_the_row() -> None:
    app, store = Reactor(), MemoryStore()

    @app.handler("steps")
    async def steps(job: Job) -> None:
        assert await job.set_progress(50, "half way") is True

    job_id = await store.enqueue("jobs", {"job_type": "steps"})
    async with serving(app, store):
        await until(lambda: status(store, job_id) == "completed")
    assert store.row("jobs", job_id)["progress_message"] == "half way"


async def test_shutdown_hands_back_what_outlives_the_grace_period_with_its_attempt_unspent() -> None:
    app, store = Reactor(), MemoryStore()
    started = anyio.Event()

    @app.handler("forever")
    async def forever(job: Job) -> None:
        started.set()
        await anyio.sleep(60)

    job_id = await store.enqueue("jobs", {"job_type": "forever"})
    began = time.monotonic()
    async with serving(app, store, grace_seconds=0.2):
        await started.wait()
    row = store.row("jobs", job_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert time.monotonic() - began < 10
    assert app.metrics.jobs[("jobs", "forever", "released")] == 1


async def test_an_unreadable_row_fails_alone_and_the_rest_of_its_batch_runs() -> None:
    app, store = Reactor(), MemoryStore()

    @app.handler("echo")
    async def echo(job: Job) -> str:
        return "ok"

    bad = await store.enqueue("jobs", {"job_type": "echo", "user_id": "not-a-uuid"})
    good = await store.enqueue("jobs", {"job_type": "echo"})
    async with serving(app, store):
        await until(lambda: status(store, good) == "completed" and status(store, bad) == "failed")
    assert store.row("jobs", bad)["last_error"] == "the job's row cannot be read: user_id is not a UUID"


async def test_expired_leases_of_any_type_are_reaped_by_the_next_tick() -> None:
    app, store = Reactor(), MemoryStore()
    spent = await store.enqueue("jobs", {"job_type": "elsewhere", "max_attempts": 1})
    again = await store.enqueue("jobs", {"job_type": "elsewhere"})
    await store.claim("jobs", "dead-worker", ["elsewhere"], 2, 60)
    for job_id in (spent, again):  # the dead worker's leases run out
        store.tables["jobs"][job_id].lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)

    @app.handler("echo")
    async def echo(job: Job) -> None:
        pass

    async with serving(app, store):
        await until(lambda: status(store, spent) == "failed" and status(store, again) == "pending")
    assert store.row("jobs", spent)["last_error"] == (
        "lease expired: worker dead-worker stopped reporting during attempt 1 of 1; attempts exhausted"
    )
    assert store.row("jobs", again)["last_error"] == (
        "lease expired: worker dead-worker stopped reporting during attempt 1 of 5"
    )


def job_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["extra"] for r in records if "job_id" in r["extra"]]


async def test_every_job_log_line_names_the_job_its_table_type_attempt_and_worker() -> None:
    app, store = Reactor(), MemoryStore()
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")

    @app.handler("mixed", timeout=0.1)
    async def mixed(job: Job) -> str:
        if job.payload == "raise":
            raise ValueError("no")
        if job.payload == "hang":
            await anyio.sleep(10)
        if job.payload == "permanent":
            raise PermanentError("never")
        return "ok"

    ids = [
        await store.enqueue("jobs", {"job_type": "mixed", "payload": p, "max_attempts": 1})
        for p in ("ok", "raise", "hang", "permanent")
    ]
    bad = await store.enqueue("jobs", {"job_type": "mixed", "user_id": "not-a-uuid"})
    try:
        async with serving(app, store):
            await until(lambda: all(status(store, i) in ("completed", "failed") for i in [*ids, bad]))
    finally:
        logger.remove(sink)
    lines = job_lines(records)
    assert {line["job_id"] for line in lines} == {*ids, bad}
    for line in lines:
        assert (line["table"], line["worker_id"]) == ("jobs", "unit")
        if line["job_id"] != bad:
            assert (line["job_type"], line["attempt"]) == ("mixed", 1)
    outcomes = {line["job_id"]: line.get("outcome") for line in lines if line.get("outcome")}
    assert outcomes == dict(
        zip([*ids, bad], ["completed", "failed", "failed", "failed", "failed"], strict=True)
    )


async def test_a_job_scheduled_later_waits_for_its_time() -> None:
    app, store = Reactor(), MemoryStore()
    ran_at: list[datetime] = []

    @app.handler("timed")
    async def timed(job: Job) -> None:
        ran_at.append(datetime.now(UTC))

    due = datetime.now(UTC) + timedelta(seconds=0.4)
    job_id = await store.enqueue("jobs", {"job_type": "timed", "run_at": due.isoformat()})
    async with serving(app, store, poll_fast_seconds=60, poll_slow_seconds=60, reap_seconds=60):
        await until(lambda: status(store, job_id) == "completed")
    assert ran_at[0] >= due


async def test_outcomes_wait_out_a_down_api_with_their_leases_kept_and_are_recorded_when_it_answers() -> None:
    app, store = Reactor(), MemoryStore()
    down = FlakyStore(store, failing={"reactor_complete"})
    runs: list[int] = []

    @app.handler("echo")
    async def echo(job: Job) -> str:
        runs.append(job.attempt)
        return "done"

    job_id = await store.enqueue("jobs", {"job_type": "echo"})
    async with serving(app, down, lease_seconds=1):  # type: ignore[arg-type]
        await until(lambda: runs)
        beats = store.calls[("reactor_heartbeat", "ok")]
        await until(lambda: store.calls[("reactor_heartbeat", "ok")] >= beats + 4)  # over a lease
        assert status(store, job_id) == "processing"  # kept, though the handler has returned
        down.failing.clear()
        await until(lambda: status(store, job_id) == "completed")
    assert store.row("jobs", job_id)["result"] == "done"
    assert runs == [1]  # never reaped and run again while its outcome waited


class FlakyStore:
    """The memory store with some calls failing as an unreachable API does, or refused."""

    def __init__(self, store: MemoryStore, failing: set[str], refused: set[str] | None = None) -> None:
        self._store = store
        self.failing = failing  # unreachable
        self.refusing = refused or set()  # answered 400
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if f"reactor_{name}" in self.failing:
                self.refused += 1
                raise Unavailable(f"reactor_{name}: cannot reach the API: ConnectError")
            if f"reactor_{name}" in self.refusing:
                raise Rejected(f"reactor_{name}: value too long (HTTP 400)", 400)
            return await attribute(*args, **kwargs)

        return call


def handed_off(store: MemoryStore, job_id: int) -> dict[str, Any]:
    """The Realtime record of an insert the database handed to this worker."""
    row = store.row("jobs", job_id)
    return {**row, "run_at": row["run_at"].isoformat(), "created_at": row["created_at"].isoformat()}


async def test_a_handed_off_job_runs_from_its_record_and_is_confirmed_with_no_claim() -> None:
    app, store = Reactor(), MemoryStore()
    release = anyio.Event()

    @app.handler("echo")
    async def echo(job: Job) -> object:
        await release.wait()
        return job.payload

    async with serving(app, store, poll_fast_seconds=60, poll_slow_seconds=60, reap_seconds=60):
        await until(lambda: store.calls[("reactor_tick", "ok")] >= 1)
        job_id = await store.enqueue("jobs", {"job_type": "echo", "payload": [1, 2]})
        await store.claim("jobs", "unit", ["echo"], 1, 5)  # what the insert trigger does
        claims = store.calls[("reactor_claim_jobs", "ok")]
        app.worker.dispatcher.take("jobs", handed_off(store, job_id))
        await until(lambda: store.calls[("reactor_heartbeat", "ok")] >= 1)  # confirmed at once
        release.set()
        await until(lambda: status(store, job_id) == "completed")
        assert store.calls[("reactor_claim_jobs", "ok")] == claims
    assert store.row("jobs", job_id)["result"] == [1, 2]


async def test_a_hand_off_beyond_the_concurrency_is_handed_straight_back() -> None:
    app, store = Reactor(), MemoryStore()
    busy, release = anyio.Event(), anyio.Event()

    @app.handler("echo")
    async def echo(job: Job) -> None:
        busy.set()
        await release.wait()

    first = await store.enqueue("jobs", {"job_type": "echo"})
    async with serving(
        app, store, concurrency=1, poll_fast_seconds=60, poll_slow_seconds=60, reap_seconds=60
    ):
        await busy.wait()
        extra = await store.enqueue("jobs", {"job_type": "echo"})
        await store.claim("jobs", "unit", ["echo"], 1, 5)
        app.worker.dispatcher.take("jobs", handed_off(store, extra))
        await until(lambda: status(store, extra) == "pending")
        assert store.row("jobs", extra)["attempts"] == 0
        release.set()
        await until(lambda: status(store, extra) == "completed")  # claimed when the slot freed
    assert status(store, first) == "completed"


async def test_a_stale_heartbeat_cancels_the_job_which_is_never_reported() -> None:
    app, store = Reactor(), MemoryStore()
    started, cancelled = anyio.Event(), anyio.Event()

    @app.handler("long")
    async def long(job: Job) -> None:
        started.set()
        try:
            await anyio.sleep(60)
        finally:
            cancelled.set()

    job_id = await store.enqueue("jobs", {"job_type": "long"})
    async with serving(app, store, lease_seconds=1):
        await started.wait()
        store.tables["jobs"][job_id].lease_token = "00000000-0000-4000-8000-00000000beef"
        await until(cancelled.is_set)
    assert not any(f in ("reactor_complete", "reactor_fail", "reactor_release") for f, _ in store.calls)
    assert app.metrics.jobs[("jobs", "long", "lost")] == 1


async def test_a_job_reaped_and_claimed_again_by_its_own_worker_runs_once_more_not_twice_at_once() -> None:
    """Its lease lapsed while it ran (heartbeats not getting through), a reaper put it back, and
    this worker claimed it again: the earlier attempt is lost, as to any other worker, and the
    later one holds the slot, the heartbeats and the outcome."""
    app, store = Reactor(), MemoryStore()
    first_started, first_stopped = anyio.Event(), anyio.Event()

    @app.handler("long")
    async def long(job: Job) -> str:
        if job.attempt == 1:
            first_started.set()
            try:
                await anyio.sleep(60)
            finally:
                first_stopped.set()
        await anyio.sleep(1.5)  # past a heartbeat, which must not name the first lease's loss
        return f"attempt {job.attempt}"

    job_id = await store.enqueue("jobs", {"job_type": "long"})
    async with serving(app, store, lease_seconds=1):
        await first_started.wait()
        row = store.tables["jobs"][job_id]  # reaped: back to pending, due now
        row.status, row.locked_by, row.lease_token, row.lease_expires_at = "pending", None, None, None
        await until(first_stopped.is_set)
        await until(lambda: status(store, job_id) == "completed")
        assert len(app.worker.running) == 0
    assert store.row("jobs", job_id)["result"] == "attempt 2"
    assert app.metrics.jobs[("jobs", "long", "lost")] == 1
    assert app.metrics.jobs[("jobs", "long", "completed")] == 1


async def test_heartbeats_keep_a_long_job_leased() -> None:
    app, store = Reactor(), MemoryStore()
    started, release = anyio.Event(), anyio.Event()

    @app.handler("long")
    async def long(job: Job) -> None:
        started.set()
        await release.wait()

    job_id = await store.enqueue("jobs", {"job_type": "long"})
    async with serving(app, store, lease_seconds=1):
        await started.wait()
        first = store.row("jobs", job_id)["lease_expires_at"]
        await until(lambda: store.row("jobs", job_id)["lease_expires_at"] > first)
        release.set()
        await until(lambda: status(store, job_id) == "completed")


async def test_a_result_the_api_refuses_fails_the_job_for_good_with_why() -> None:
    app, store = Reactor(), MemoryStore()
    refusing = FlakyStore(store, failing=set(), refused={"reactor_complete"})

    @app.handler("echo")
    async def echo(job: Job) -> str:
        return "too big"

    job_id = await store.enqueue("jobs", {"job_type": "echo"})
    async with serving(app, refusing):  # type: ignore[arg-type]
        await until(lambda: status(store, job_id) == "failed")
    assert store.row("jobs", job_id)["last_error"] == (
        "the result could not be recorded: reactor_complete: value too long (HTTP 400)"
    )


class Refusing(MemoryStore):
    """Every claim and tick refused as the API refuses them, with `message` and `status`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__()
        self.message, self.status = message, status

    async def claim(self, table: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise Rejected(f"reactor_claim: {self.message} (HTTP {self.status})", self.status)

    async def tick(self, table: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls[("reactor_tick", "rejected")] += 1
        raise Rejected(f"reactor_tick: {self.message} (HTTP {self.status})", self.status)


@pytest.mark.parametrize(
    ("message", "status", "hint"),
    [
        ("Invalid API key", 401, " (check SUPABASE_SERVICE_ROLE_KEY)"),
        ("permission denied", 403, " (check SUPABASE_SERVICE_ROLE_KEY)"),
        (
            "Could not find the function public.reactor_tick(...) in the schema cache",
            404,
            " (reactor's migrations are missing: run `reactor migrate` or paste `reactor sql` into the"
            " SQL editor; if they ran, the API's schema cache is stale: run `notify pgrst, 'reload schema';`"
            " in the SQL editor)",
        ),
        ("unknown job table", 400, ""),
    ],
)
async def test_a_refused_claim_is_reported_once_with_what_to_do_and_the_worker_is_not_ready(
    message: str, status: int, hint: str
) -> None:
    app, store = Reactor(), Refusing(message, status)
    records: list[str] = []
    sink = logger.add(lambda m: records.append(m.record["message"]), level="ERROR")

    @app.handler("echo")
    async def echo(job: Job) -> None:
        pass

    try:
        async with serving(app, store):
            await until(lambda: store.calls[("reactor_tick", "rejected")] >= 3)
            assert app.worker.dispatcher.api_ok is False
    finally:
        logger.remove(sink)
    expected = f"cannot claim jobs: reactor_tick: {message} (HTTP {status}){hint}; retrying on the next tick"
    assert records == [expected]  # once, however often it fails


async def test_a_hand_off_whose_record_lost_its_payload_is_claimed_whole_instead() -> None:
    """Realtime cuts a record over its size limit to its short values (docs/hosted-supabase.md):
    the payload is missing, so the handler must not run on the record."""
    app, store = Reactor(), MemoryStore()
    payloads: list[object] = []

    @app.handler("big")
    async def big(job: Job) -> None:
        payloads.append(job.payload)

    async with serving(app, store, poll_fast_seconds=60, poll_slow_seconds=60, reap_seconds=60):
        await until(lambda: store.calls[("reactor_tick", "ok")] >= 1)
        job_id = await store.enqueue("jobs", {"job_type": "big", "payload": {"text": "x" * 100}})
        await store.claim("jobs", "unit", ["big"], 1, 5)  # what the insert trigger does
        record = {k: v for k, v in handed_off(store, job_id).items() if k != "payload"}
        app.worker.dispatcher.take("jobs", record)
        await until(lambda: status(store, job_id) == "completed")
    assert payloads == [{"text": "x" * 100}]
    assert store.row("jobs", job_id)["attempts"] == 1  # the hand-back gave its attempt back
