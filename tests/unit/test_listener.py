"""What the listener does with each change Realtime brings, without a socket: the payloads are
shaped as the official client hands them to a postgres_changes callback. The connection, its
supervisor and the probe run against the local stack in tests/worker/test_realtime.py."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

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

    def hand_off_seen(self, lease_ends: datetime) -> None:
        self.calls.append(("hand_off_seen", lease_ends))

    def tick_now(self) -> None:
        self.calls.append(("tick_now",))

    def health_changed(self) -> None:
        self.calls.append(("health_changed",))


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
    )


def change(kind: str = "INSERT", table: str = "jobs", **record: Any) -> dict[str, Any]:
    return {"data": {"type": kind, "table": table, "record": {"id": 7, "job_type": "mine", **record}}}


def test_a_due_pending_insert_wakes_a_claim_of_its_table(listener: Listener, heard: Heard) -> None:
    listener.heard(change(status="pending", run_at=datetime.now(UTC).isoformat()))
    assert heard.calls == [("wake", "jobs")]


def test_a_job_back_to_pending_wakes_a_claim_too(listener: Listener, heard: Heard) -> None:
    listener.heard(change("UPDATE", status="pending"))
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


def test_an_insert_handed_to_another_worker_sets_a_check_for_its_lease_end(
    listener: Listener, heard: Heard
) -> None:
    ends = datetime.now(UTC) + timedelta(seconds=5)
    listener.heard(change(status="processing", locked_by="w2", lease_expires_at=ends.isoformat()))
    assert heard.calls == [("hand_off_seen", ends)]


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
        change(job_type=PROBE_JOB_TYPE, status="cancelled", payload={"worker": "w1"}),
        change(job_type=PROBE_JOB_TYPE, status="cancelled", payload=["not", "an", "object"]),
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


def test_inserts_are_filtered_on_the_server_by_job_type_and_probe() -> None:
    assert insert_filter(["a", "b.c"]) == {"filter": f"job_type=in.(a,b.c,{PROBE_JOB_TYPE})"}


@pytest.mark.parametrize("types", [["with,comma"], ["with space"], ['quo"te'], [f"t{i}" for i in range(100)]])
def test_types_the_in_filter_cannot_say_are_filtered_by_the_worker_instead(types: list[str]) -> None:
    assert insert_filter(types) == {}
