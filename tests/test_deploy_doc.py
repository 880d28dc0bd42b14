"""docs/deploy.md: its configuration blocks parse, name only settings that exist, and give every
platform a stop timeout above the worker's grace period and the time to record outcomes."""

from __future__ import annotations

import configparser
import json
import re
import tomllib
from pathlib import Path

import yaml

from reactor.config import _KEY_VARIABLES, _VARIABLES, Config
from reactor.worker import OUTCOME_GIVE_UP_SECONDS

DOC = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.S)


def stop_budget(grace: float = Config.grace_seconds) -> float:
    return grace + OUTCOME_GIVE_UP_SECONDS


def test_every_setting_named_in_the_guide_exists() -> None:
    known = {variable for variable, _, _ in _VARIABLES.values()} | set(_KEY_VARIABLES) | {"REACTOR_APP"}
    named = set(re.findall(r"\b(?:REACTOR|SUPABASE)_[A-Z_]+\b", DOC))
    assert named - known == set()


def test_the_kubernetes_deployment_outlasts_the_grace_period_and_probes_health_and_readiness() -> None:
    [manifests] = blocks("yaml")
    secret, deployment = yaml.safe_load_all(manifests)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert pod["terminationGracePeriodSeconds"] > stop_budget(float(env["REACTOR_GRACE_SECONDS"]))
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployment["spec"]["replicas"] >= 2
    assert container["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    assert set(secret["stringData"]) == {"SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"}


def test_the_fly_config_stops_with_sigterm_after_the_grace_period() -> None:
    [fly] = blocks("toml")
    config = tomllib.loads(fly)
    assert config["kill_signal"] == "SIGTERM"
    assert config["kill_timeout"] > stop_budget()
    assert config["checks"]["health"]["path"] == "/healthz"


def test_the_systemd_unit_runs_reactor_and_waits_out_the_grace_period() -> None:
    [unit] = blocks("ini")
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit)
    service = parser["Service"]
    assert service["ExecStart"].endswith("reactor run")
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > stop_budget()
    assert service["Restart"] == "always"


def test_the_sample_log_line_is_json_with_the_job_fields() -> None:
    [line] = blocks("json")
    fields = json.loads(line)
    assert {"job_id", "table", "job_type", "attempt", "worker_id", "outcome", "duration_ms"} <= set(fields)
