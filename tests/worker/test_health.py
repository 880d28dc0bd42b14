"""The HTTP endpoint an orchestrator and Prometheus read: liveness, readiness, metrics."""

from __future__ import annotations

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reactor import Job, Reactor
from reactor.config import load
from tests.support.worker import FAST, insert, running, status_is, wait_until, worker_config

pytestmark = pytest.mark.anyio


def app_with_echo() -> Reactor:
    app = Reactor()

    @app.handler("echo")
    async def echo(job: Job) -> object:
        return job.payload

    return app


async def get(app: Reactor, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{app.health_port}{path}")


async def test_ready_worker_reports_health_and_job_metrics(stack, db) -> None:
    app = app_with_echo()
    async with running(app, worker_config(stack, health_port=0)):
        job_id = await insert(db, "echo", {"x": 1})
        await status_is(db, job_id, "completed")
        assert (await get(app, "/healthz")).status_code == 200
        ready = await get(app, "/readyz")
        metrics = (await get(app, "/metrics")).text
        missing = await get(app, "/nothing")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "api": "reachable", "realtime": "off", "polling_seconds": 0.2}
    assert 'reactor_jobs_total{job_type="echo",outcome="completed",table="jobs"} 1.0' in metrics
    assert 'reactor_rpc_calls_total{function="reactor_tick",outcome="ok"}' in metrics
    assert 'reactor_handler_duration_seconds_count{job_type="echo",table="jobs"} 1.0' in metrics
    assert 'reactor_pickup_latency_seconds_count{table="jobs"} 1.0' in metrics
    assert 'reactor_realtime_state{state="off"} 1.0' in metrics
    [ticks] = [line for line in metrics.splitlines() if line.startswith("reactor_ticks_total ")]
    assert float(ticks.split()[1]) >= 1.0  # the start-up tick at least
    assert missing.status_code == 404


async def test_metrics_parse_as_prometheus_text_with_escaped_label_values(stack, db) -> None:
    app = app_with_echo()
    weird = 'we"ird\\type\nx'

    @app.handler(weird)
    async def odd(job: Job) -> object:
        return None

    async with running(app, worker_config(stack, health_port=0)):
        await status_is(db, await insert(db, "echo"), "completed")
        await status_is(db, await insert(db, weird), "completed")
        response = await get(app, "/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {name: f.type for name, f in families.items()} == {
        "reactor_jobs": "counter",
        "reactor_handler_duration_seconds": "histogram",
        "reactor_pickup_latency_seconds": "histogram",
        "reactor_rpc_calls": "counter",
        "reactor_ticks": "counter",
        "reactor_realtime_withheld": "counter",
        "reactor_realtime_subscriptions": "counter",
        "reactor_realtime_live": "counter",
        "reactor_realtime_probes_heard": "counter",
        "reactor_scheduled_jobs": "counter",
        "reactor_hand_offs": "counter",
        "reactor_jobs_running": "gauge",
        "reactor_realtime_state": "gauge",
        "reactor_job_limit": "gauge",
        "reactor_job_limit_running": "gauge",
        "reactor_job_limit_recent_starts": "gauge",
        "reactor_job_type_paused": "gauge",
    }
    jobs = {s.labels["job_type"]: s for s in families["reactor_jobs"].samples}
    assert jobs["echo"].name == "reactor_jobs_total"
    assert jobs["echo"].labels == {"table": "jobs", "job_type": "echo", "outcome": "completed"}
    assert jobs["echo"].value == 1.0
    assert jobs[weird].value == 1.0
    assert 'job_type="we\\"ird\\\\type\\nx"' in response.text
    handler = families["reactor_handler_duration_seconds"].samples
    for job_type in ("echo", weird):
        (inf,) = [s for s in handler if s.labels.get("le") == "+Inf" and s.labels["job_type"] == job_type]
        (count,) = [s for s in handler if s.name.endswith("_count") and s.labels["job_type"] == job_type]
        assert inf.value == count.value == 1.0
    states = {s.labels["state"]: s.value for s in families["reactor_realtime_state"].samples}
    assert states == {"off": 1.0, "connecting": 0.0, "subscribed": 0.0, "down": 0.0}


async def test_worker_that_cannot_reach_the_api_is_live_but_not_ready() -> None:
    app = app_with_echo()
    env = {"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "key"}
    async with running(app, load(env, **{**FAST, "health_port": 0})):

        async def port_open() -> bool:
            return app.health_port is not None

        await wait_until(port_open)
        assert (await get(app, "/healthz")).status_code == 200
        ready = await get(app, "/readyz")
    assert ready.status_code == 503
    assert ready.json()["api"] == "unreachable"


async def test_metrics_show_each_limited_types_limits_running_jobs_and_recent_starts(stack, db) -> None:
    app = Reactor()
    hold = anyio.Event()

    @app.handler("render", concurrency=2, rate="5/m")
    async def render(job: Job) -> None:
        await hold.wait()

    await db.execute("select public.reactor_set_limits('jobs', 'thumbnail', '{\"paused\": true}')")
    async with running(app, worker_config(stack, health_port=0, stats_seconds=0.2)):
        for _ in range(3):
            await insert(db, "render")

        async def two_running() -> str | None:
            text = (await get(app, "/metrics")).text
            return text if 'reactor_job_limit_running{job_type="render",table="jobs"} 2.0' in text else None

        metrics = await wait_until(two_running)
        hold.set()
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    limits = {
        (s.labels["job_type"], s.labels["limit"]): s.value for s in families["reactor_job_limit"].samples
    }
    assert limits == {
        ("render", "concurrency"): 2.0,
        ("render", "rate"): 5.0,
        ("render", "per_seconds"): 60.0,
    }
    starts = {s.labels["job_type"]: s.value for s in families["reactor_job_limit_recent_starts"].samples}
    assert starts == {"render": 2.0}  # the third waits for a slot
    paused = {s.labels["job_type"]: s.value for s in families["reactor_job_type_paused"].samples}
    assert paused == {"render": 0.0, "thumbnail": 1.0}
