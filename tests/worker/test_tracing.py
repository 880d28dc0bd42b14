"""reactor.tracing on a real worker against the local stack: one `reactor.job` span per handler
run, with the job's attributes and what came of it, read with the OpenTelemetry SDK's in-memory
exporter."""

from __future__ import annotations

import anyio
import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from reactor import Job, PermanentError, Reactor
from reactor.retry import RetryPolicy
from reactor.tracing import tracing
from tests.support.worker import insert, running, status_is, wait_until, worker_config

pytestmark = pytest.mark.anyio


async def test_each_job_run_is_one_span_with_the_jobs_attributes_and_outcome(
    stack, db: asyncpg.Connection
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = Reactor()
    app.middleware(tracing(provider))
    inside: dict[int, bool] = {}

    @app.handler("work", retry=RetryPolicy(0.05, 0.05), timeout=0.5)
    async def work(job: Job) -> str:
        inside[job.id] = get_current_span().is_recording()  # the handler runs inside the span
        case = job.payload["case"]
        if case == "flaky" and job.attempt == 1:
            raise ValueError("try again")
        if case == "doomed":
            raise PermanentError("never")
        if case == "hangs":
            await anyio.sleep(60)
        return "ok"

    config = worker_config(stack)
    async with running(app, config):
        ids = {c: await insert(db, "work", {"case": c}, max_attempts=2) for c in ("fine", "flaky", "doomed")}
        hangs = await insert(db, "work", {"case": "hangs"}, max_attempts=1)
        for job_id in ids.values():
            await status_is(db, job_id, "completed", "failed")
        await status_is(db, hangs, "failed")
        await wait_until(lambda: _true(len(exporter.get_finished_spans()) == 5))
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} == {"reactor.job"}
    assert {s.kind for s in spans} == {SpanKind.CONSUMER}
    by_run = {(s.attributes["job.id"], s.attributes["job.attempt"]): s for s in spans}
    expected = {
        (ids["fine"], 1): "completed",
        (ids["flaky"], 1): "retried",
        (ids["flaky"], 2): "completed",
        (ids["doomed"], 1): "failed",
        (hangs, 1): "cancelled",  # its timeout cut it short; the row says "timed out"
    }
    assert {run: s.attributes["outcome"] for run, s in by_run.items()} == expected
    for span in spans:
        assert span.attributes["job.type"] == "work"
        assert span.attributes["job.table"] == "jobs"
        assert span.attributes["worker.id"] == config.worker_id
    assert by_run[(ids["fine"], 1)].status.status_code == StatusCode.UNSET
    doomed = by_run[(ids["doomed"], 1)]
    assert (doomed.status.status_code, doomed.status.description) == (
        StatusCode.ERROR,
        "PermanentError: never",
    )
    assert [e.name for e in doomed.events] == ["exception"]
    assert by_run[(ids["flaky"], 1)].status.status_code == StatusCode.ERROR
    assert set(inside.values()) == {True}


async def test_a_payload_carrying_the_frontends_traceparent_continues_its_trace(
    stack, db: asyncpg.Connection
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = Reactor()
    app.middleware(tracing(provider))

    @app.handler("work")
    async def work(job: Job) -> None:
        return None

    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with running(app, worker_config(stack)):
        traced = await insert(db, "work", {"traceparent": f"00-{trace_id}-{parent_id}-01"})
        garbled = await insert(db, "work", {"traceparent": "not a trace"})
        plain = await insert(db, "work", ["no", "context"])
        for job_id in (traced, garbled, plain):
            await status_is(db, job_id, "completed")
        await wait_until(lambda: _true(len(exporter.get_finished_spans()) == 3))
    spans = {s.attributes["job.id"]: s for s in exporter.get_finished_spans()}
    assert (format(spans[traced].context.trace_id, "032x"), format(spans[traced].parent.span_id, "016x")) == (
        trace_id,
        parent_id,
    )
    assert spans[garbled].parent is None and spans[plain].parent is None


async def _true(value: bool) -> bool:
    return value
