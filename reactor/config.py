"""Worker configuration: the environment (`SUPABASE_*`, `REACTOR_*`), overridable in code.

Every problem is found at once and reported as one line naming the variable, so a bad deployment
fails at start-up with everything to fix, not one error per restart.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

# reactor.create_job_table()'s rule, checked against it in tests/contract/test_constants.py.
TABLE_NAME = re.compile(r"\A[a-z][a-z0-9_]{0,47}\Z")


class ConfigError(Exception):
    """The configuration is unusable; `problems` holds one line per variable at fault."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    supabase_url: str
    service_key: str
    table: str = "jobs"
    concurrency: int = 10
    lease_seconds: int = 60
    grace_seconds: float = 30.0
    poll_fast_seconds: float = 2.0
    poll_slow_seconds: float = 30.0
    reap_seconds: float = 30.0
    stats_seconds: float = 30.0
    probe_seconds: float = 30.0
    realtime: bool = True
    hand_off: bool = True
    health_port: int | None = 8080
    log_format: str = "text"
    log_level: str = "INFO"
    worker_id: str = ""
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 3600.0
    # Values never written to a log line or a job row, besides the service key: given in code, or
    # from the environment variables REACTOR_SECRET_ENV names.
    secrets: tuple[str, ...] = ()

    def redacted(self) -> tuple[str, ...]:
        """Every value kept out of log lines and job rows: the service key and the secrets."""
        return (self.service_key, *self.secrets)


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError
    return value


def _lease(raw: str) -> int:
    value = int(raw)
    if not 3 <= value <= 86400:
        raise ValueError
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "on", "yes"):
        return True
    if lowered in ("0", "false", "off", "no"):
        return False
    raise ValueError


def _port(raw: str) -> int | None:
    if raw.strip().lower() == "off":
        return None
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError
    return value


_SERVICE_PATH = re.compile(r"/(rest|realtime|auth|storage|functions)/v1$")


def _url(raw: str) -> str:
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ValueError
    url = raw.rstrip("/")
    if _SERVICE_PATH.search(url):
        # The clients add /rest/v1 and /realtime/v1 themselves; a URL copied from an API page
        # would otherwise fail later with a bare 404.
        raise ValueError("the project URL without the API path, e.g. https://<ref>.supabase.co")
    return url


def _key(raw: str) -> str:
    if not raw.strip() or any(c.isspace() for c in raw):
        raise ValueError
    return raw


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError
        return value

    return parse


def _level(raw: str) -> str:
    return _choice("trace", "debug", "info", "success", "warning", "error", "critical")(raw).upper()


def _table(raw: str) -> str:
    if not TABLE_NAME.match(raw):
        raise ValueError
    return raw


# Realtime keeps only fields of up to 64 bytes in a record it cuts for size, and a worker hears the
# rows whose `locked_by` names it (sql/migrations/0010).
MAX_WORKER_ID_BYTES = 64


def _worker_id(raw: str) -> str:
    if not 1 <= len(raw.encode()) <= MAX_WORKER_ID_BYTES:
        raise ValueError
    return raw


def default_worker_id() -> str:
    """The host's name (cut to fit), the process id and six random hex digits."""
    suffix = f"-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    host = socket.gethostname().encode()[: MAX_WORKER_ID_BYTES - len(suffix)].decode(errors="ignore")
    return host + suffix


# field: (environment variable, parser, what a valid value looks like)
_VARIABLES: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "supabase_url": ("SUPABASE_URL", _url, "an http:// or https:// URL of the Supabase project"),
    "table": ("REACTOR_TABLE", _table, "a job table name: lowercase letters, digits, underscores"),
    "concurrency": ("REACTOR_CONCURRENCY", _positive_int, "a whole number of at least 1"),
    "lease_seconds": ("REACTOR_LEASE_SECONDS", _lease, "a whole number of seconds from 3 to 86400"),
    "grace_seconds": ("REACTOR_GRACE_SECONDS", _positive_float, "a number of seconds above 0"),
    "poll_fast_seconds": ("REACTOR_POLL_FAST_SECONDS", _positive_float, "a number of seconds above 0"),
    "poll_slow_seconds": ("REACTOR_POLL_SLOW_SECONDS", _positive_float, "a number of seconds above 0"),
    "reap_seconds": ("REACTOR_REAP_SECONDS", _positive_float, "a number of seconds above 0"),
    "stats_seconds": ("REACTOR_STATS_SECONDS", _positive_float, "a number of seconds above 0"),
    "probe_seconds": ("REACTOR_PROBE_SECONDS", _positive_float, "a number of seconds above 0"),
    "realtime": ("REACTOR_REALTIME", _bool, "on or off"),
    "hand_off": ("REACTOR_HAND_OFF", _bool, "on or off"),
    "health_port": ("REACTOR_HEALTH_PORT", _port, "a TCP port from 0 to 65535, or off"),
    "log_format": ("REACTOR_LOG_FORMAT", _choice("text", "json"), "text or json"),
    "log_level": ("REACTOR_LOG_LEVEL", _level, "one of debug, info, warning, error"),
    "worker_id": ("REACTOR_WORKER_ID", _worker_id, "1 to 64 bytes"),
    "retry_base_seconds": ("REACTOR_RETRY_BASE_SECONDS", _positive_float, "a number of seconds above 0"),
    "retry_cap_seconds": ("REACTOR_RETRY_CAP_SECONDS", _positive_float, "a number of seconds above 0"),
}

_KEY_VARIABLES = ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY")


def _service_key(env: Mapping[str, str], problems: list[str]) -> str:
    for name in _KEY_VARIABLES:
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            return _key(raw)
        except ValueError:
            problems.append(f"{name} is malformed: expected the service-role key, with no spaces")
            return ""
    problems.append(f"{_KEY_VARIABLES[0]} is not set: give the project's service-role key")
    return ""


SECRET_ENV = "REACTOR_SECRET_ENV"  # names the variables whose values are secrets


def _secrets(env: Mapping[str, str], problems: list[str]) -> tuple[str, ...]:
    raw = env.get(SECRET_ENV) or ""
    found: list[str] = []
    for name in (n.strip() for n in raw.split(",")):
        if not name:
            continue
        if not env.get(name):
            problems.append(f"{SECRET_ENV} names {name}, which is not set: name only set variables")
            continue
        found.append(env[name])
    return tuple(found)


def check_options(overrides: Mapping[str, Any]) -> None:
    """Refuse option names `Config` does not have, such as a misspelt one given in code."""
    unknown = set(overrides) - {f.name for f in fields(Config)}
    if unknown:
        raise TypeError(f"unknown configuration options: {', '.join(sorted(unknown))}")


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the configuration from `env` (default: the process environment) and `overrides`."""
    env = os.environ if env is None else env
    check_options(overrides)
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, (variable, parse, expected) in _VARIABLES.items():
        if name in overrides:
            continue
        raw = env.get(variable)
        if raw is None or raw == "":
            if name == "supabase_url":
                problems.append(f"{variable} is not set: give {expected}")
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            problems.append(f"{variable} is malformed ({_shown(raw)}): expected {exc or expected}")
    if "service_key" not in overrides:
        values["service_key"] = _service_key(env, problems)
    if "secrets" not in overrides:
        values["secrets"] = _secrets(env, problems)
    values.update(overrides)
    if problems:
        raise ConfigError(problems)
    values.setdefault("worker_id", default_worker_id())
    return Config(**values)


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")
