"""The default retry schedule: exponential ceilings, full jitter below them, a cap."""

from __future__ import annotations

import random

import pytest

from reactor.retry import RetryPolicy


def test_ceilings_double_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(base_seconds=2, cap_seconds=3600)
    assert [policy.ceiling(n) for n in (1, 2, 3, 5, 11, 12, 50, 10_000)] == [
        2,
        4,
        8,
        32,
        2048,
        3600,
        3600,
        3600,
    ]


def test_delays_are_spread_over_the_whole_window_below_the_ceiling() -> None:
    policy = RetryPolicy(base_seconds=2, cap_seconds=3600)
    rng = random.Random(7)
    delays = [policy.delay(3, rng) for _ in range(2000)]
    assert all(0 <= d <= 8 for d in delays)
    assert min(delays) < 0.5 and max(delays) > 7.5
    assert 3.5 < sum(delays) / len(delays) < 4.5  # half the ceiling on average


def test_a_cap_below_the_base_is_refused() -> None:
    with pytest.raises(ValueError, match="cap_seconds >= base_seconds"):
        RetryPolicy(base_seconds=10, cap_seconds=5)
