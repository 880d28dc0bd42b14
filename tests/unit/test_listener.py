"""What the listener does with each row Realtime brings, without a socket: the payloads are shaped
as the official client hands them to a postgres_changes callback (`heard`) or to a broadcast
callback for the database's announcements (`announced`). The connection, its supervisor and the
probe run against the local stack in tests/worker/test_realtime.py."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from reactor.feed import Feed
from reactor.listener import PROBE_JOB_TYPE, Listener, insert_filter


class Heard:
    """Everything the listener asked of the rest of the worker."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def wake(self, table: str | None) -> None:
        self.calls.append(("wake", table))

    def handed(self, table: str, record: dict[str, Any]) -> None:
        self.calls.append(("handed", table, record["id"]))

    def schedule(self, table: str, at: datetime) -> None:
        self.calls.append(("schedule", table, at))

    def tick_now(self) -> None:
        self.calls.append(("tick_now",))

    def health_changed(self) -> None:
        self.calls.append(("health_changed",))


async def topic() -> str:
    return "reactor:topic-w1"


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
def listener(heard: Heard) -> Listener:
    return Listener(
        "http://127.0.0.1:1",
        "key",
        {"jobs": ["mine"], "other": ["theirs"]},
        "w1",
        Feed(True),
        heard.wake,
        heard,
        30.0,
        heard.handed,
        Counter(),
        topic,
    )


def change(kind: str = "INSERT", table: str = "jobs", **record: Any) -> dict[str, Any]:
    """A change naming this worker (locked_by w1), the only kind its subscription's filter lets by."""
    row = {"id": 7, "job_type": "mine", "locked_by": "w1", **record}
    return {"data": {"type": kind, "table": table, "record": row}}


def test_a_due_insert_this_worker_heralds_wakes_a_claim_of_its_table(
    listener: Listener, heard: Heard
) -> None:
    listener.heard(change(status="pending", run_at=datetime.now(UTC).isoformat()))
    assert heard.calls == [("wake", "jobs")]


def test_a_pending_insert_due_later_sets_a_timer_for_its_run_at(listener: Listener, heard: Heard) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    listener.heard(change(status="pending", run_at=later.isoformat()))
    assert heard.calls == [("schedule", "jobs", later)]


def test_a_run_at_without_a_zone_is_read_as_utc(listener: Listener, heard: Heard) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    listener.heard(change(status="pending", run_at=later.replace(tzinfo=None).isoformat()))
    assert heard.calls == [("schedule", "jobs", later)]


@pytest.mark.parametrize("run_at", [None, "not a time", 12, "-infinity"])
def test_an_unreadable_run_at_counts_as_due(listener: Listener, heard: Heard, run_at: Any) -> None:
    listener.heard(change(status="pending", run_at=run_at))
    assert heard.calls == [("wake", "jobs")]


def test_an_insert_handed_to_this_worker_starts_from_its_record(listener: Listener, heard: Heard) -> None:
    listener.heard(change(status="processing", locked_by="w1"))
    assert heard.calls == [("handed", "jobs", 7)]


def test_the_probe_row_naming_this_worker_is_heard_as_the_probe(listener: Listener, heard: Heard) -> None:
    listener._probe_seen = seen = anyio.Event()
    listener.heard(change(job_type=PROBE_JOB_TYPE, status="cancelled", payload=["any", "json"]))
    assert seen.is_set() and heard.calls == []


def test_a_processing_update_is_not_a_hand_off(listener: Listener, heard: Heard) -> None:
    listener.heard(change("UPDATE", status="processing", locked_by="w1"))
    assert heard.calls == []


@pytest.mark.parametrize(
    "payload",
    [
        change(status="completed"),
        change(status="pending", job_type="theirs"),  # handled here, but in another table
        change(status="pending", job_type="unknown"),
        change(table="nowhere", status="pending"),
        change(status="pending", locked_by="w2"),  # a row naming another worker (no filter at all)
        change(status="processing", locked_by="w2"),
        change(status="pending", locked_by=None),
        change("UPDATE", status="pending"),
        {"data": {}},
        {},
    ],
)
def test_changes_that_are_not_work_for_this_worker_ask_nothing(
    listener: Listener, heard: Heard, payload: dict[str, Any]
) -> None:
    listener.heard(payload)
    assert heard.calls == []


def test_any_change_counts_as_the_feed_being_alive(listener: Listener) -> None:
    listener.last_event = 0.0
    listener.heard(change(status="completed"))
    assert listener.last_event > 0.0


def test_hearing_all_a_worker_with_hand_offs_off_claims_for_any_pending_insert(heard: Heard) -> None:
    listener = Listener(
        "http://127.0.0.1:1", "key", {"jobs": ["mine"]}, "w1", Feed(True), heard.wake, heard, 30.0,
        heard.handed, Counter(), topic, hear_all=True,
    )  # fmt: skip
    listener.heard(change(status="pending", locked_by=None))
    listener.heard(change(status="processing", locked_by="w2"))  # another's hand-off: not its own
    listener.heard(change(job_type=PROBE_JOB_TYPE, status="cancelled", locked_by="w2"))
    assert heard.calls == [("wake", "jobs")]


def test_hearing_all_narrows_inserts_by_job_type_on_the_server() -> None:
    assert insert_filter(["a", "b.c"]) == {"filter": "job_type=in.(a,b.c)"}  # probes come announced
    assert insert_filter(["with,comma"]) == {}  # the `in` filter cannot say it: the worker filters


def test_a_cancel_signal_naming_this_worker_stops_that_job(heard: Heard) -> None:
    cancelled: list[tuple[str, int]] = []
    listener = Listener(
        "http://127.0.0.1:1", "key", {"jobs": ["mine"]}, "w1", Feed(True), heard.wake, heard, 30.0,
        heard.handed, Counter(), topic, cancel=lambda table, job_id: cancelled.append((table, job_id)),
    )  # fmt: skip
    listener.heard(
        change(job_type=PROBE_JOB_TYPE, status="cancelled", payload={"worker": "w1", "cancel": 42})
    )
    listener.heard(change(job_type=PROBE_JOB_TYPE, status="cancelled", payload={"cancel": "42"}))  # not an id
    listener.heard(
        change(job_type=PROBE_JOB_TYPE, status="cancelled", locked_by="w2", payload={"cancel": 43})
    )
    assert cancelled == [("jobs", 42)] and heard.calls == []


def announcement(
    replayed: bool = False, event: str = "job", table: str = "jobs", **record: Any
) -> dict[str, Any]:
    """A broadcast from reactor.announce, as the official client hands it to the callback."""
    row = {"id": 7, "job_type": "mine", "locked_by": "w1", **record}
    message: dict[str, Any] = {
        "type": "broadcast",
        "event": event,
        "payload": {"table": table, "record": row},
    }
    if replayed:
        message["meta"] = {"replayed": True, "id": "m1"}
    return message


def test_an_announced_hand_off_starts_from_its_record(listener: Listener, heard: Heard) -> None:
    listener.last_event = 0.0
    listener.announced(announcement(status="processing"))
    assert heard.calls == [("handed", "jobs", 7)] and listener.last_event > 0.0


def test_an_announced_pending_job_wakes_a_claim_of_its_table(listener: Listener, heard: Heard) -> None:
    listener.announced(announcement(table="other", job_type="theirs", status="pending"))
    assert heard.calls == [("wake", "other")]


@pytest.mark.parametrize(
    "message",
    [
        announcement(event="other", status="processing"),
        announcement(status="processing", locked_by="w2"),
        {"type": "broadcast", "event": "job", "payload": {"table": "jobs", "record": "not a row"}},
        {"type": "broadcast", "event": "job", "payload": "not an object"},
        {"type": "broadcast", "event": "job"},
        {},
    ],
)
def test_announcements_that_are_not_work_for_this_worker_ask_nothing(
    listener: Listener, heard: Heard, message: dict[str, Any]
) -> None:
    listener.announced(message)
    assert heard.calls == []


def test_a_replayed_hand_off_starts_only_while_its_lease_runs(listener: Listener, heard: Heard) -> None:
    running = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    ended = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    listener.announced(announcement(replayed=True, status="processing", lease_expires_at=ended))
    listener.announced(announcement(replayed=True, status="processing", lease_expires_at=None))
    assert heard.calls == []  # the reaper gives it back, and a claim takes it
    listener.announced(announcement(replayed=True, status="processing", lease_expires_at=running))
    assert heard.calls == [("handed", "jobs", 7)]


def test_a_replayed_probe_proves_nothing_about_the_feed_now(listener: Listener, heard: Heard) -> None:
    listener._probe_seen = seen = anyio.Event()
    listener.last_event = 0.0
    listener.announced(announcement(replayed=True, job_type=PROBE_JOB_TYPE, status="cancelled", payload={}))
    assert not seen.is_set() and listener.last_event == 0.0 and heard.calls == []


def test_a_replayed_cancel_signal_still_stops_its_job(heard: Heard) -> None:
    cancelled: list[tuple[str, int]] = []
    listener = Listener(
        "http://127.0.0.1:1", "key", {"jobs": ["mine"]}, "w1", Feed(True), heard.wake, heard, 30.0,
        heard.handed, Counter(), topic, cancel=lambda table, job_id: cancelled.append((table, job_id)),
    )  # fmt: skip
    listener._probe_seen = seen = anyio.Event()
    signal = {"worker": "w1", "cancel": 42}
    listener.announced(
        announcement(replayed=True, job_type=PROBE_JOB_TYPE, status="cancelled", payload=signal)
    )
    assert cancelled == [("jobs", 42)] and not seen.is_set()


def test_a_replayed_pending_job_still_wakes_a_claim(listener: Listener, heard: Heard) -> None:
    listener.announced(announcement(replayed=True, status="pending"))
    assert heard.calls == [("wake", "jobs")]


def test_a_hand_off_heard_live_and_then_replayed_starts_once(listener: Listener, heard: Heard) -> None:
    """A rejoin replays the second before the drop, which the worker may have heard already."""
    running = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    listener.announced(announcement(status="processing", lease_expires_at=running))
    listener.announced(announcement(replayed=True, status="processing", lease_expires_at=running))
    listener.announced(announcement(table="other", job_type="theirs", status="processing"))
    assert heard.calls == [("handed", "jobs", 7), ("handed", "other", 7)]
