"""The stack's profiles: the hosted one takes its plan's quotas, and every number can be set."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reactor.devstack.profile import Profile, parse_setting


def test_the_local_profile_limits_nothing() -> None:
    local = Profile.local()
    assert (local.messages_per_second, local.max_rows, local.statement_timeout_ms) == (None, None, None)
    assert (local.poll_busy_seconds, local.schema_cache, local.round_trip_ms) == (None, False, 0.0)


@pytest.mark.parametrize(
    ("plan", "quotas"), [("free", (100, 100, 200)), ("pro", (500, 500, 500)), ("team", (2500, 2500, 10000))]
)
def test_a_hosted_profile_takes_its_plans_quotas(plan: str, quotas: tuple[int, int, int]) -> None:
    hosted = Profile.hosted(plan)
    assert (hosted.messages_per_second, hosted.joins_per_second, hosted.max_connections) == quotas
    assert (hosted.poll_busy_seconds, hosted.poll_idle_seconds, hosted.changes_per_poll) == (0.0, 0.5, 100)
    assert (hosted.max_rows, hosted.statement_timeout_ms, hosted.schema_cache) == (1000, 8000, True)
    assert hosted.max_record_bytes == 1024 * 1024


def test_any_number_can_be_overridden_and_an_unknown_one_is_refused_by_name() -> None:
    assert Profile.hosted("pro", max_rows=50).max_rows == 50
    with pytest.raises(ValueError, match=r"unknown profile settings \['max_row'\]"):
        Profile.hosted("pro", max_row=50)
    with pytest.raises(ValueError, match="unknown plan 'enterprise'"):
        Profile.hosted("enterprise")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("max_rows=5", ("max_rows", 5)),
        ("round_trip_ms=2.5", ("round_trip_ms", 2.5)),
        ("private_only=true", ("private_only", True)),
        ("max_rows=none", ("max_rows", None)),
    ],
)
def test_settings_on_the_command_line_are_numbers_booleans_or_none(text: str, parsed: tuple) -> None:
    assert parse_setting(text) == parsed


def test_a_bad_setting_stops_the_devstack_command_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reactor.cli", "devstack", "--profile", "hosted", "--set", "max_rows=many"],
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stderr) == (
        2,
        "reactor devstack: max_rows: expected a number, true, false or none, got 'many'\n",
    )
