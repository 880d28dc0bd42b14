"""Retry delays: exponential backoff with full jitter.

The delay before attempt n+1 is drawn uniformly from [0, min(cap, base * 2**(n-1))]. With the
defaults (base 2 s, cap 1 h), a job that fails its first attempt waits up to 2 s, after the second
up to 4 s, after the third up to 8 s, after the fifth up to 32 s, and after the twelfth or later up
to an hour. On average that is half the ceiling: 1 s, 2 s, 4 s, 16 s. Full jitter spreads a burst
of failures (an outage downstream) over the whole window instead of retrying them in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 2.0
    cap_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if not self.base_seconds > 0 or not self.cap_seconds >= self.base_seconds:
            raise ValueError("a retry policy needs base_seconds > 0 and cap_seconds >= base_seconds")

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt `attempt` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 62)
        return min(self.cap_seconds, self.base_seconds * 2.0**exponent)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, self.ceiling(attempt))
