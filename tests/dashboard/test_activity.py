"""The overview's numbers from rows, the failed-job filter as PostgREST parameters, and the
dashboard's settings: no stack needed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reactor.dashboard import activity
from reactor.dashboard.project import FailedFilter
from reactor.dashboard.settings import SettingsError, load, parse_tokens

NOW = datetime(2030, 1, 1, 12, 30, 30, tzinfo=UTC)
ENV = {"SUPABASE_URL": "http://127.0.0.1:54321", "SUPABASE_SERVICE_ROLE_KEY": "key"}


def finished(job_type: str, status: str, done: str, started: str = "12:00:02", due: str = "12:00:00") -> dict:
    day = "2030-01-01T"
    return {
        "job_type": job_type,
        "status": status,
        "created_at": f"{day}12:00:00+00:00",
        "run_at": f"{day}{due}+00:00",
        "started_at": f"{day}{started}+00:00",
        "completed_at": f"{day}{done}+00:00",
    }


def test_by_type_counts_pending_running_and_the_windows_outcomes_with_pickup_latency() -> None:
    rows = [
        finished("email", "completed", "12:30:01", started="12:00:01"),
        finished("email", "completed", "12:30:02", started="12:00:03"),
        finished("email", "failed", "12:29:00", started="12:00:05"),
        finished("resize", "completed", "12:29:00", started="11:59:00"),  # started before due: 0
    ]
    running = [
        {"id": 9, "job_type": "email", "locked_by": "w1", "lease_expires_at": None, "started_at": None}
    ]
    email, pdf, resize = activity.by_type({"email": 4, "pdf": 2}, rows, running)
    assert (email.job_type, email.pending, email.running, email.completed, email.failed) == (
        "email",
        4,
        1,
        2,
        1,
    )
    assert email.failure_rate == pytest.approx(1 / 3)
    assert (email.pickup_p50, email.pickup_p95) == (3.0, pytest.approx(4.8))
    assert (pdf.pending, pdf.failure_rate, pdf.pickup_p50) == (2, None, None)
    assert (resize.completed, resize.pickup_p50) == (1, 0.0)


def test_per_minute_puts_each_outcome_in_its_minute_and_leaves_older_ones_out() -> None:
    rows = [
        finished("a", "completed", "12:30:10"),
        finished("a", "failed", "12:30:29"),
        finished("a", "completed", "12:16:00"),  # the window's first minute
        finished("a", "completed", "12:15:59"),  # before it
    ]
    series = activity.per_minute(rows, NOW, 15)
    assert len(series) == 15
    assert series[0].start == datetime(2030, 1, 1, 12, 16, tzinfo=UTC)
    assert (series[0].completed, series[-1].completed, series[-1].failed) == (1, 1, 1)
    assert sum(m.completed + m.failed for m in series) == 3


def test_workers_group_running_jobs_by_lease_holder() -> None:
    running = [
        {
            "id": 3,
            "job_type": "a",
            "locked_by": "w2",
            "lease_expires_at": "2030-01-01T12:31:00+00:00",
            "started_at": "x",
        },
        {
            "id": 1,
            "job_type": "b",
            "locked_by": "w1",
            "lease_expires_at": "2030-01-01T12:31:30+00:00",
            "started_at": None,
        },
        {
            "id": 2,
            "job_type": "a",
            "locked_by": "w2",
            "lease_expires_at": "2030-01-01T12:30:50+00:00",
            "started_at": "x",
        },
    ]
    w1, w2 = activity.workers(running)
    assert (w1.worker, w1.unconfirmed, [j["id"] for j in w1.jobs]) == ("w1", 1, [1])
    assert (w2.worker, w2.types["a"], [j["id"] for j in w2.jobs]) == ("w2", 2, [2, 3])
    assert w2.lease_ends == datetime(2030, 1, 1, 12, 30, 50, tzinfo=UTC)


def test_the_failed_filter_becomes_postgrest_filters_with_the_error_matched_literally() -> None:
    since = datetime(2030, 1, 1, tzinfo=UTC)
    which = FailedFilter(job_type="email", error="50%_off\\", since=since, until=since.replace(day=2))
    assert which.params() == [
        ("status", "eq.failed"),
        ("job_type", "eq.email"),
        ("last_error", "ilike.*50\\%\\_off\\\\*"),
        ("completed_at", "gte.2030-01-01T00:00:00+00:00"),
        ("completed_at", "lt.2030-01-02T00:00:00+00:00"),
    ]
    assert FailedFilter().params() == [("status", "eq.failed")]
    assert which.describe() == (
        "of type email, whose error contains '50%_off\\\\', failed from 2030-01-01 00:00 UTC, "
        "failed before 2030-01-02 00:00 UTC"
    )


def test_tokens_have_names_and_long_secrets() -> None:
    assert parse_tokens("alice:0123456789abcdef, bob:fedcba9876543210") == (
        ("alice", "0123456789abcdef"),
        ("bob", "fedcba9876543210"),
    )
    assert parse_tokens("0123456789abcdef") == (("operator", "0123456789abcdef"),)
    with pytest.raises(SettingsError, match="at least 16"):
        parse_tokens("alice:short")
    with pytest.raises(SettingsError, match="a name of its own"):
        parse_tokens("a:0123456789abcdef,a:0123456789abcdeg")


def test_settings_bind_loopback_by_default_and_need_a_token_elsewhere() -> None:
    settings = load("127.0.0.1", 0, None, 1.0, ENV)
    assert (settings.loopback, settings.tables, settings.tokens, settings.log_format) == (
        True,
        ("jobs",),
        (),
        "json",
    )
    assert load("::1", 0, ["jobs", "emails"], 1.0, ENV).tables == ("jobs", "emails")
    with pytest.raises(SettingsError) as refused:
        load("0.0.0.0", 0, ["Bad"], 0.01, ENV)
    assert [p.split(" ", 1)[0] for p in refused.value.problems] == ["--table", "--refresh", "--host"]
    token = {**ENV, "REACTOR_DASHBOARD_TOKEN": "ops:0123456789abcdef"}
    assert load("0.0.0.0", 0, None, 1.0, token).tokens == (("ops", "0123456789abcdef"),)
