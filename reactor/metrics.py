"""The worker's counters and histograms, rendered in the Prometheus text format for /metrics."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


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
    realtime_state: Callable[[], str] = lambda: "off"

    def render(self, rpc_calls: Counter[tuple[str, str]], running: int) -> str:
        lines: list[str] = []
        lines += _counter(
            "reactor_jobs_total",
            "Jobs finished by this worker, by outcome.",
            ("table", "job_type", "outcome"),
            self.jobs.items(),
        )
        lines += _histogram(
            "reactor_handler_duration_seconds",
            "Handler run time.",
            ("table", "job_type"),
            self.handler_seconds,
        )
        lines += _histogram(
            "reactor_pickup_latency_seconds",
            "From run_at (or insert) to handler start.",
            ("table",),
            self.pickup_seconds,
        )
        lines += _counter(
            "reactor_rpc_calls_total",
            "Calls to the reactor_* RPC functions.",
            ("function", "outcome"),
            rpc_calls.items(),
        )
        lines += [
            "# HELP reactor_jobs_running Jobs running now.",
            "# TYPE reactor_jobs_running gauge",
            f"reactor_jobs_running {running}",
        ]
        state = self.realtime_state()
        lines += [
            "# HELP reactor_realtime_state 1 for the listener's current state.",
            "# TYPE reactor_realtime_state gauge",
        ]
        lines += [
            f'reactor_realtime_state{{state="{s}"}} {int(s == state)}'
            for s in ("off", "connecting", "subscribed", "down")
        ]
        return "\n".join(lines) + "\n"


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _counter(
    name: str, help_: str, names: tuple[str, ...], items: Iterable[tuple[tuple[str, ...], int]]
) -> list[str]:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
    lines += [f"{name}{_labels(names, labels)} {value}" for labels, value in sorted(items)]
    return lines


def _histogram(name: str, help_: str, names: tuple[str, ...], hist: Histogram) -> list[str]:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    for labels in sorted(hist.counts):
        base = _labels(names, labels)[1:-1]
        for bound, count in zip(hist.buckets, hist.cumulative(labels), strict=True):
            lines.append(f'{name}_bucket{{{base},le="{bound}"}} {count}')
        lines.append(f'{name}_bucket{{{base},le="+Inf"}} {hist.counts[labels]}')
        lines.append(f"{name}_sum{{{base}}} {hist.sums[labels]:.6f}")
        lines.append(f"{name}_count{{{base}}} {hist.counts[labels]}")
    return lines
