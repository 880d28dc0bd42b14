"""Fault injection for the local stack: what tests and chaos runs can make go wrong on purpose.

One `Faults` object is shared by the REST and Realtime halves of a running stack. Timed faults
end by themselves: each holds the monotonic time it lasts until.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


@dataclass
class Faults:
    rest_status: int = 0  # 502 or 503: REST answers this status while rest_until is in the future
    rest_hang: bool = False  # REST requests hang (no answer) while rest_until is in the future
    rest_until: float = 0.0
    ws_refuse_until: float = 0.0  # websocket upgrades are refused (HTTP 503) until then
    silent_until: float = 0.0  # sockets and heartbeats stay up, no database events are sent
    replication_down_until: float = 0.0  # Broadcast from Database is not read (nor sent) until then
    drop_fraction: float = 0.0  # fraction of database events (changes, broadcasts) dropped, 0.0 to 1.0
    # Extra messages counted towards Realtime's per-project message quota (hosted profile only):
    # message_rate a second from message_rate_from until message_rate_until (monotonic times), as
    # postgres changes, and with message_rate_broadcasts as broadcasts too (the app's own traffic
    # of either kind: Realtime counts the two apart, and each has the quota).
    message_rate: float = 0.0
    message_rate_from: float = 0.0
    message_rate_until: float = 0.0
    message_rate_broadcasts: bool = False

    def fail_rest(self, status: int, seconds: float) -> None:
        if status not in (502, 503):
            raise ValueError(f"REST fault status must be 502 or 503, got {status}")
        self.rest_status, self.rest_hang = status, False
        self.rest_until = time.monotonic() + seconds

    def hang_rest(self, seconds: float) -> None:
        self.rest_status, self.rest_hang = 0, True
        self.rest_until = time.monotonic() + seconds

    def refuse_websockets(self, seconds: float) -> None:
        self.ws_refuse_until = time.monotonic() + seconds

    def go_silent(self, seconds: float) -> None:
        self.silent_until = time.monotonic() + seconds

    def take_replication_down(self, seconds: float) -> None:
        self.replication_down_until = time.monotonic() + seconds

    def replication_down(self) -> bool:
        return time.monotonic() < self.replication_down_until

    def drop_events(self, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"drop fraction must be between 0 and 1, got {fraction}")
        self.drop_fraction = fraction

    def count_messages(self, rate: float, seconds: float, broadcasts: bool = False) -> None:
        if rate < 0 or seconds < 0:
            raise ValueError(f"message rate and seconds must not be negative, got {rate}, {seconds}")
        now = time.monotonic()
        self.message_rate, self.message_rate_from, self.message_rate_until = rate, now, now + seconds
        self.message_rate_broadcasts = broadcasts

    def extra_messages(self, since: float, until: float) -> float:
        """The postgres changes the `message_rate` fault adds between two monotonic times."""
        overlap = min(until, self.message_rate_until) - max(since, self.message_rate_from)
        return self.message_rate * overlap if overlap > 0 else 0.0

    def extra_broadcasts(self, since: float, until: float) -> float:
        """The broadcasts the `message_rate` fault adds between two monotonic times."""
        return self.extra_messages(since, until) if self.message_rate_broadcasts else 0.0

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def rest_fault(self) -> tuple[int, bool]:
        """(status, hang) to apply to a REST request now; (0, False) when REST is healthy."""
        if time.monotonic() >= self.rest_until:
            return 0, False
        return self.rest_status, self.rest_hang

    def websockets_refused(self) -> bool:
        return time.monotonic() < self.ws_refuse_until

    def event_suppressed(self) -> bool:
        """Whether the next change event is withheld (silent feed or a dropped event)."""
        if time.monotonic() < self.silent_until:
            return True
        return self.drop_fraction > 0 and random.random() < self.drop_fraction
