"""OpenTelemetry tracing of job runs, as a middleware: one `reactor.job` span per handler call.

    from reactor.tracing import tracing
    app.middleware(tracing())

It needs only the `opentelemetry-api` package (`pip install 'reactor[otel]'`); the worker never
imports this module itself, so it runs without it. The spans go wherever the process's tracer
provider sends them (set one up with `opentelemetry-sdk` and an exporter, or run under
`opentelemetry-instrument`); with none set, the API's no-op tracer makes them cost next to nothing.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised by hand, without the extra
    raise ImportError(
        "reactor.tracing needs the OpenTelemetry API: pip install 'reactor[otel]' "
        "(or opentelemetry-api), plus an SDK and exporter to send the spans somewhere"
    ) from exc

from reactor import executor
from reactor.executor import Middleware
from reactor.handlers import HandlerFunction
from reactor.job import Job
from reactor.retry import RetryPolicy

SPAN_NAME = "reactor.job"
_TRACE_CONTEXT = TraceContextTextMapPropagator()  # W3C traceparent/tracestate only, no baggage
_POLICY = RetryPolicy()  # classifies an exception's outcome kind; its delays are never used


def tracing(tracer_provider: Any = None) -> Middleware:
    """A middleware that runs each job inside a `reactor.job` span (kind CONSUMER) with the
    attributes `job.id`, `job.type`, `job.table`, `job.attempt`, `worker.id` and, once the handler
    has ended, `outcome`: `completed` when it returned, what the worker makes of what it raised
    (`retried`, `failed`, `snoozed`, `waiting`), or `cancelled` when it was cut short (its
    timeout, a lost lease, a cancel, shutdown). A failed attempt sets the span's status to ERROR
    and records the exception. A payload that carries a W3C `traceparent` (and `tracestate`), as
    the frontend that inserted the job had it, makes the span a child of that trace, so the insert
    and every run of the job are one trace. `tracer_provider` defaults to the global one. Register
    it first to time the other middleware too."""
    tracer = trace.get_tracer("reactor", _version(), tracer_provider=tracer_provider)

    async def traced(job: Job, call_next: HandlerFunction) -> Any:
        attributes = {
            "job.id": job.id,
            "job.type": job.job_type,
            "job.table": job.table,
            "job.attempt": job.attempt,
            "worker.id": job.log_context.get("worker_id", ""),
        }
        with tracer.start_as_current_span(
            SPAN_NAME,
            context=_inserted_in(job.payload),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await call_next(job)
            except Exception as exc:
                outcome = executor.classify(job, None, _POLICY, exc)
                span.set_attribute("outcome", outcome.kind)
                if outcome.kind in ("retried", "failed"):
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, outcome.error))
                raise
            except BaseException:  # the cancellation of a timeout, a cancel, a lost lease, shutdown
                span.set_attribute("outcome", "cancelled")
                raise
            span.set_attribute("outcome", "completed")
            return result

    return traced


def _inserted_in(payload: Any) -> Any:
    """The trace context the job's payload carries (`traceparent`, `tracestate`), or None. The
    payload is the user's to write: a made-up one joins the job's spans to a made-up trace, no more."""
    if not isinstance(payload, dict) or not isinstance(payload.get("traceparent"), str):
        return None
    carrier = {k: payload[k] for k in ("traceparent", "tracestate") if isinstance(payload.get(k), str)}
    return _TRACE_CONTEXT.extract(carrier)


def _version() -> str:
    try:
        return metadata.version("reactor")
    except metadata.PackageNotFoundError:
        return "unknown"
