"""The dashboard's settings: the project's URL and key as the worker reads them, and its own.

The dashboard binds to loopback by default. Bound anywhere else it requires REACTOR_DASHBOARD_TOKEN
and refuses to start without it, with one line saying so.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from reactor import config

TOKEN_VARIABLE = "REACTOR_DASHBOARD_TOKEN"
MIN_SECRET_LENGTH = 16
DEFAULT_PORT = 8090


class SettingsError(Exception):
    """The dashboard cannot start; one line per problem in `problems`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    supabase_url: str
    service_key: str
    tables: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tokens: tuple[tuple[str, str], ...] = ()  # (name, secret)
    refresh_seconds: float = 1.0  # how often the overview's counts are read while someone watches
    log_format: str = "json"
    log_level: str = "INFO"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def redacted(self) -> tuple[str, ...]:
        return (self.service_key, *(secret for _, secret in self.tokens))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_tokens(raw: str) -> tuple[tuple[str, str], ...]:
    """`name:secret` entries, comma-separated; a secret alone is named `operator`. The name is who
    the action log says acted."""
    tokens = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, colon, secret = item.partition(":")
        if not colon:
            name, secret = "operator", item
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise SettingsError([f"{TOKEN_VARIABLE}: token name {name!r} must be letters, digits, - _ ."])
        if len(secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                [f"{TOKEN_VARIABLE}: the secret of {name!r} must be at least {MIN_SECRET_LENGTH} characters"]
            )
        tokens.append((name, secret))
    if len({name for name, _ in tokens}) != len(tokens):
        raise SettingsError([f"{TOKEN_VARIABLE}: each token needs a name of its own"])
    return tuple(tokens)


def load(
    host: str,
    port: int,
    tables: list[str] | None,
    refresh_seconds: float,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    try:
        worker = config.load(dict(env))
    except config.ConfigError as exc:
        raise SettingsError(exc.problems) from None
    problems = [
        f"--table {t!r} is not a job table name" for t in tables or () if not config.TABLE_NAME.match(t)
    ]
    if not 0 <= port <= 65535:
        problems.append(f"--port {port} is not a TCP port")
    if not 0.2 <= refresh_seconds <= 60:
        problems.append(f"--refresh {refresh_seconds:g} must be between 0.2 and 60 seconds")
    tokens = parse_tokens(env.get(TOKEN_VARIABLE, ""))
    if not is_loopback(host) and not tokens:
        problems.append(
            f"--host {host} is not loopback: set {TOKEN_VARIABLE} (name:secret, comma-separated) "
            "so that only its holders can use the dashboard"
        )
    if problems:
        raise SettingsError(problems)
    return Settings(
        supabase_url=worker.supabase_url,
        service_key=worker.service_key,
        tables=tuple(dict.fromkeys(tables or [worker.table])),
        host=host,
        port=port,
        tokens=tokens,
        refresh_seconds=refresh_seconds,
        log_format=worker.log_format if "REACTOR_LOG_FORMAT" in env else "json",
        log_level=worker.log_level,
    )
