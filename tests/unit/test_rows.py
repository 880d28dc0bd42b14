"""reactor.rows reads each claimed row or hand-off record on its own; one it cannot read fails alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reactor import rows

TOKEN = "6f0a2b9e-6d55-4c1b-9d7e-0f2f2b0c1a11"
USER = "0b5c7e1d-2f3a-4b6c-8d9e-0a1b2c3d4e5f"
ROW = {
    "id": 7,
    "job_type": "send",
    "payload": {"to": "ada"},
    "priority": 3,
    "attempt": 2,
    "max_attempts": 5,
    "lease_token": TOKEN,
    "run_at": "2026-12-03T08:00:00+00:00",
    "created_at": "2026-12-03T07:59:59.5+00:00",
    "user_id": USER,
}


def test_a_claimed_row_becomes_its_job() -> None:
    job = rows.read("jobs", ROW)
    assert (job.id, job.table, job.job_type, job.payload, job.priority) == (
        7,
        "jobs",
        "send",
        {"to": "ada"},
        3,
    )
    assert (job.attempt, job.max_attempts, job.lease_token, job.user_id) == (2, 5, TOKEN, USER)
    assert job.run_at == datetime(2026, 12, 3, 8, tzinfo=UTC)
    assert job.created_at == datetime(2026, 12, 3, 7, 59, 59, 500000, tzinfo=UTC)


def test_a_hand_off_record_counts_attempts_in_its_own_column() -> None:
    record = {k: v for k, v in ROW.items() if k != "attempt"} | {"attempts": 1}
    assert rows.read("jobs", record, attempt_column="attempts").attempt == 1
    with pytest.raises(rows.Unreadable, match="column attempt is missing"):
        rows.read("jobs", record)


def test_what_a_row_may_leave_out_has_its_default() -> None:
    job = rows.read("jobs", {k: ROW[k] for k in ("id", "job_type", "attempt", "max_attempts", "lease_token")})
    assert (job.payload, job.priority, job.run_at, job.created_at, job.user_id) == (None, 0, None, None, None)


def test_uuids_in_another_form_are_read_in_postgres_form() -> None:
    job = rows.read("jobs", ROW | {"lease_token": TOKEN.upper(), "user_id": "{" + USER + "}"})
    assert (job.lease_token, job.user_id) == (TOKEN, USER)


def test_a_time_without_an_offset_is_utc() -> None:
    assert rows.read("jobs", ROW | {"run_at": "2026-12-03T08:00:00"}).run_at == datetime(
        2026, 12, 3, 8, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"run_at": "-infinity"}, "run_at '-infinity' is not a timestamp this worker can read"),
        (
            {"created_at": "0044-03-15T00:00:00+00:00 BC"},
            "created_at '0044-03-15T00:00:00+00:00 BC' is not a timestamp",
        ),
        ({"run_at": 5}, "run_at is not a timestamp"),
        ({"job_type": ["send"]}, "job_type is not text"),
        ({"attempt": "2"}, "attempt is not an integer"),
        ({"attempt": True}, "attempt is not an integer"),
        ({"max_attempts": None}, "max_attempts is not an integer"),
        ({"priority": 1.5}, "priority is not an integer"),
        ({"user_id": "someone"}, "user_id is not a UUID"),
    ],
)
def test_a_row_with_a_bad_value_is_unreadable_but_can_still_be_failed(change: dict, reason: str) -> None:
    with pytest.raises(rows.Unreadable) as caught:
        rows.read("jobs", ROW | change)
    assert str(caught.value).startswith(f"the job's row cannot be read: {reason}")
    assert caught.value.lease == {"id": 7, "lease_token": TOKEN}


@pytest.mark.parametrize(
    "row",
    [
        ROW | {"id": "7"},
        ROW | {"id": None},
        ROW | {"lease_token": "x"},
        ROW | {"lease_token": 1},
        [ROW],
        None,
    ],
)
def test_a_row_without_a_usable_id_or_token_cannot_even_be_failed(row) -> None:
    with pytest.raises(rows.Unreadable) as caught:
        rows.read("jobs", row)
    assert caught.value.lease is None
    assert "jobs" in str(caught.value)


def test_a_time_with_another_offset_keeps_its_instant() -> None:
    job = rows.read("jobs", ROW | {"run_at": "2026-12-03T10:00:00+02:00"})
    assert job.run_at == datetime(2026, 12, 3, 8, tzinfo=UTC)


def test_a_long_unreadable_value_is_quoted_in_part() -> None:
    with pytest.raises(rows.Unreadable) as caught:
        rows.read("jobs", ROW | {"run_at": "x" * 100})
    assert f"run_at {'x' * 40!r} is not a timestamp" in str(caught.value)
