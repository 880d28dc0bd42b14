"""The worker's counters and histograms, exposed to Prometheus through prometheus_client.

Recording stays on reactor's own plain counters: the worker counts every job on its hot path, and
prometheus_client's `labels(...).inc()` costs a dict lookup and a lock per call. At scrape time a
collector turns them into metric families, and prometheus_client writes the exposition format.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
REALTIME_STATES = ("off", "connecting", "subscribed", "down")
# What the worker's loops count (Metrics.events), each a counter of its own: name, help.
EVENTS = {
    "ticks": ("reactor_ticks", "Ticks: requests that reap, claim and send the probe."),
    "realtime_subscriptions": ("reactor_realtime_subscriptions", "Successful Realtime (re)subscribes."),
    "realtime_live": (
        "reactor_realtime_live",
        "'Replication connection established' messages: feeds of the database's announcements gone live.",
    ),
    "realtime_probes_heard": ("reactor_realtime_probes_heard", "Probe rows whose event came back."),
    "realtime_withheld": (
        "reactor_realtime_withheld",
        "Inserts left unannounced for reactor's Realtime budget, as this worker's ticks saw them.",
    ),
    "scheduled_jobs": ("reactor_scheduled_jobs", "Jobs this worker enqueued for schedules (@app.cron)."),
    "hand_offs": ("reactor_hand_offs", "Jobs started from a hand-off's announcement, with no claim request."),
}


@dataclass
class Histogram:
    buckets: tuple[float, ...] = SECONDS_BUCKETS
    counts: Counter[tuple[str, ...]] = field(default_factory=Counter)
    sums: Counter[tuple[str, ...]] = field(default_factory=Counter)
    # Per label set, how many observations fell in each bucket alone; rendering accumulates them.
    bucket_counts: dict[tuple[str, ...], list[int]] = field(default_factory=dict)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        self.counts[labels] += 1
        self.sums[labels] += value
        row = self.bucket_counts.get(labels)
        if row is None:
            row = self.bucket_counts[labels] = [0] * (len(self.buckets) + 1)
        row[bisect_left(self.buckets, value)] += 1

    def cumulative(self, labels: tuple[str, ...]) -> list[int]:
        """Observations at or below each bound, as Prometheus counts them."""
        return list(accumulate(self.bucket_counts[labels][:-1]))


@dataclass
class Metrics:
    jobs: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # table, job_type, outcome
    handler_seconds: Histogram = field(default_factory=Histogram)  # table, job_type
    pickup_seconds: Histogram = field(default_factory=Histogram)  # table
    events: Counter[str] = field(default_factory=Counter)  # a name in EVENTS -> count
    # table -> job type -> its fleet-wide limits, running jobs and recent starts, as the last
    # statistics this worker fetched had them (reactor_stats' "limits")
    limits: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def render(self, rpc_calls: Counter[tuple[str, str]], running: int, realtime_state: str) -> str:
        """The Prometheus text exposition of this worker's metrics, read now."""
        registry = CollectorRegistry()  # never the global one: two workers may share a process
        registry.register(_Scrape(self, rpc_calls, running, realtime_state))
        return generate_latest(registry).decode()


@dataclass(frozen=True, eq=False)  # hashed by identity, as the registry keys its collectors
class _Scrape(Collector):
    """One scrape's view of the worker's metrics, as prometheus_client metric families."""

    metrics: Metrics
    rpc_calls: Counter[tuple[str, str]]
    running: int
    realtime_state: str

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield _counter(
            "reactor_jobs",
            "Jobs finished by this worker, by outcome.",
            ("table", "job_type", "outcome"),
            m.jobs.items(),
        )
        yield _histogram(
            "reactor_handler_duration_seconds", "Handler run time.", ("table", "job_type"), m.handler_seconds
        )
        yield _histogram(
            "reactor_pickup_latency_seconds",
            "From run_at (or insert) to handler start.",
            ("table",),
            m.pickup_seconds,
        )
        yield _counter(
            "reactor_rpc_calls",
            "Calls to the reactor_* RPC functions.",
            ("function", "outcome"),
            self.rpc_calls.items(),
        )
        for event, (name, help_) in EVENTS.items():
            yield CounterMetricFamily(name, help_, value=m.events[event])
        yield GaugeMetricFamily("reactor_jobs_running", "Jobs running now.", value=self.running)
        yield _realtime_state(self.realtime_state)
        yield from _limits(m.limits)


def _counter(
    name: str, help_: str, names: tuple[str, ...], items: Iterable[tuple[tuple[str, ...], int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_, labels=names)
    for labels, value in sorted(items):
        family.add_metric(labels, value)
    return family


def _histogram(name: str, help_: str, names: tuple[str, ...], hist: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_, labels=names)
    for labels in sorted(hist.counts):
        bounds = [*map(str, hist.buckets), "+Inf"]
        counts = [*hist.cumulative(labels), hist.counts[labels]]
        buckets = list(zip(bounds, counts, strict=True))
        family.add_metric(labels, buckets, hist.sums[labels])
    return family


def _limits(found: dict[str, dict[str, dict[str, Any]]]) -> Iterator[Metric]:
    """The fleet-wide limits of job types, from the statistics: each set limit, the fleet's
    running jobs of the type, a rate's starts in its current window, and whether it is paused."""
    limit = GaugeMetricFamily(
        "reactor_job_limit",
        "A fleet-wide limit of a job type (concurrency, rate per per_seconds, per_user), as set.",
        labels=("table", "job_type", "limit"),
    )
    running = GaugeMetricFamily(
        "reactor_job_limit_running",
        "Running jobs of a limited job type, fleet-wide.",
        labels=("table", "job_type"),
    )
    starts = GaugeMetricFamily(
        "reactor_job_limit_recent_starts",
        "Starts of a rate-limited job type in its current window, fleet-wide.",
        labels=("table", "job_type"),
    )
    paused = GaugeMetricFamily(
        "reactor_job_type_paused", "1 while a job type is paused fleet-wide.", labels=("table", "job_type")
    )
    for table, types in sorted(found.items()):
        for job_type, values in sorted(types.items()):
            for name in ("concurrency", "rate", "per_seconds", "per_user"):
                if values.get(name) is not None:
                    limit.add_metric((table, job_type, name), values[name])
            running.add_metric((table, job_type), values.get("running", 0))
            if values.get("recent_starts") is not None:
                starts.add_metric((table, job_type), values["recent_starts"])
            paused.add_metric((table, job_type), float(bool(values.get("paused"))))
    yield from (limit, running, starts, paused)


def _realtime_state(state: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "reactor_realtime_state", "1 for the listener's current state.", labels=("state",)
    )
    for s in REALTIME_STATES:
        family.add_metric((s,), float(s == state))
    return family
