"""Configuration from the environment: every bad value stops start-up with one line naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reactor.config import ConfigError, load

GOOD = {"SUPABASE_URL": "http://127.0.0.1:54321", "SUPABASE_SERVICE_ROLE_KEY": "service-key"}

MALFORMED = {
    "SUPABASE_URL": "127.0.0.1:54321",
    "SUPABASE_SERVICE_ROLE_KEY": "has a space",
    "REACTOR_TABLE": "Jobs-Table",
    "REACTOR_CONCURRENCY": "0",
    "REACTOR_LEASE_SECONDS": "ten",
    "REACTOR_GRACE_SECONDS": "-1",
    "REACTOR_POLL_FAST_SECONDS": "nan",
    "REACTOR_POLL_SLOW_SECONDS": "0",
    "REACTOR_REAP_SECONDS": "x",
    "REACTOR_STATS_SECONDS": "inf",
    "REACTOR_PROBE_SECONDS": "",
    "REACTOR_REALTIME": "maybe",
    "REACTOR_HAND_OFF": "sometimes",
    "REACTOR_HEALTH_PORT": "70000",
    "REACTOR_LOG_FORMAT": "xml",
    "REACTOR_LOG_LEVEL": "loud",
    "REACTOR_WORKER_ID": "w" * 65,
    "REACTOR_RETRY_BASE_SECONDS": "0",
    "REACTOR_RETRY_CAP_SECONDS": "-5",
}


def test_defaults_need_only_the_url_and_the_service_key() -> None:
    config = load(GOOD)
    assert (config.table, config.concurrency, config.lease_seconds, config.grace_seconds) == (
        "jobs",
        10,
        60,
        30.0,
    )
    assert (config.poll_fast_seconds, config.poll_slow_seconds, config.health_port) == (2.0, 30.0, 8080)
    assert config.worker_id


def test_the_default_worker_id_fits_in_64_bytes_whatever_the_host_name(monkeypatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "pod-" + "é" * 60)
    worker_id = load(GOOD).worker_id
    assert worker_id.startswith("pod-é") and len(worker_id.encode()) <= 64
    assert load({**GOOD, "REACTOR_WORKER_ID": "é" * 32}).worker_id == "é" * 32  # 64 bytes


def test_the_older_service_key_name_is_accepted() -> None:
    config = load({"SUPABASE_URL": GOOD["SUPABASE_URL"], "SUPABASE_SERVICE_KEY": "older-name"})
    assert config.service_key == "older-name"


@pytest.mark.parametrize("variable", ["SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"])
def test_a_missing_required_variable_is_named(variable: str) -> None:
    env = {k: v for k, v in GOOD.items() if k != variable}
    with pytest.raises(ConfigError) as caught:
        load(env)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{variable} is not set")


@pytest.mark.parametrize("variable", [v for v, raw in MALFORMED.items() if raw])
def test_each_malformed_variable_gives_one_line_naming_it(variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({**GOOD, variable: MALFORMED[variable]})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{variable} is malformed")
    assert "expected" in caught.value.problems[0]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load({k: v for k, v in MALFORMED.items() if v})
    named = {line.split()[0] for line in caught.value.problems}
    assert named == {k for k, v in MALFORMED.items() if v}


def test_values_given_in_code_override_the_environment() -> None:
    config = load({**GOOD, "REACTOR_CONCURRENCY": "not a number"}, concurrency=3, health_port=None)
    assert (config.concurrency, config.health_port) == (3, None)


def test_health_endpoint_can_be_switched_off() -> None:
    assert load({**GOOD, "REACTOR_HEALTH_PORT": "off"}).health_port is None


def test_reactor_run_with_bad_environment_exits_non_zero_with_one_line_per_problem() -> None:
    env = {"PATH": "/usr/bin:/bin", "SUPABASE_URL": "not-a-url", "REACTOR_CONCURRENCY": "many"}
    done = subprocess.run(
        [sys.executable, "-m", "reactor.cli", "run", "tests.worker.apps:app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert [line.split()[1] for line in lines] == [
        "SUPABASE_URL",
        "REACTOR_CONCURRENCY",
        "SUPABASE_SERVICE_ROLE_KEY",
    ]
    assert "Traceback" not in done.stderr


def test_reactor_run_with_a_bad_import_string_says_so() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reactor.cli", "run", "tests.worker.apps"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "module:attribute" in done.stderr


@pytest.mark.parametrize(
    "url", ["https://abc.supabase.co/rest/v1", "https://abc.supabase.co/rest/v1/", "http://h:1/realtime/v1"]
)
def test_a_url_with_the_api_path_is_refused_with_what_to_give_instead(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load({**GOOD, "SUPABASE_URL": url})
    assert "SUPABASE_URL is malformed" in str(refused.value)
    assert "expected the project URL without the API path, e.g. https://<ref>.supabase.co" in str(
        refused.value
    )


def test_a_url_with_another_path_is_kept_for_a_proxied_self_hosted_project() -> None:
    assert load({**GOOD, "SUPABASE_URL": "https://example.com/supabase/"}).supabase_url == (
        "https://example.com/supabase"
    )
