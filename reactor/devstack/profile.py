"""How the local stack behaves: `local` (fast, nothing limited, for development) or `hosted` (the
limits, timing and failures of hosted Supabase, for tests and benchmarks that must not be kinder
than the service). docs/hosted-supabase.md gives each number's source and what reactor does
about it.

A hosted profile takes a plan's numbers (free, pro, team) and any of them can be overridden:
`reactor devstack --profile hosted --plan pro --set max_rows=500`. A limit of None is off.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

PLANS = ("free", "pro", "team")
# Realtime's per-project quotas by plan: messages a second, channel joins a second, concurrent
# connections (docs/hosted-supabase.md, "Quotas").
_QUOTAS = {
    "free": {"messages_per_second": 100, "joins_per_second": 100, "max_connections": 200},
    "pro": {"messages_per_second": 500, "joins_per_second": 500, "max_connections": 500},
    "team": {"messages_per_second": 2500, "joins_per_second": 2500, "max_connections": 10000},
}


@dataclass(frozen=True)
class Profile:
    name: str = "local"
    plan: str | None = None
    # Realtime
    messages_per_second: int | None = None  # over the 60 s average, postgres_changes are dropped
    joins_per_second: int | None = None
    max_connections: int | None = None
    channels_per_connection: int | None = None
    private_only: bool = False  # the project refuses public channels
    poll_busy_seconds: float | None = None  # None: changes stream at once; else polled, this apart
    poll_idle_seconds: float | None = None
    changes_per_poll: int | None = None
    max_record_bytes: int | None = None  # a larger change arrives with errors and small fields only
    # PostgREST
    max_rows: int | None = None  # db-max-rows: cuts every read, set-returning functions too
    # statement_timeout of a request, by the role its token names: `anon` has its own; every other
    # role (authenticated's own setting, service_role inheriting the authenticator's) this one
    statement_timeout_ms: int | None = None
    anon_statement_timeout_ms: int | None = None
    schema_cache: bool = False  # functions created after the last NOTIFY pgrst are unknown
    # Distance: added to each REST request and each socket frame, both ways
    round_trip_ms: float = 0.0

    @classmethod
    def local(cls) -> Profile:
        return cls()

    @classmethod
    def hosted(cls, plan: str = "free", **overrides: Any) -> Profile:
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}: one of {', '.join(PLANS)}")
        profile = cls(
            name="hosted",
            plan=plan,
            **_QUOTAS[plan],
            channels_per_connection=100,
            poll_busy_seconds=0.0,  # a poll that delivered rows is followed by the next at once
            poll_idle_seconds=0.5,
            changes_per_poll=100,
            max_record_bytes=1024 * 1024,
            max_rows=1000,
            statement_timeout_ms=8000,
            anon_statement_timeout_ms=3000,
            schema_cache=True,
            round_trip_ms=20.0,
        )
        return profile.with_settings(overrides)

    def with_settings(self, settings: dict[str, Any]) -> Profile:
        """This profile with some numbers changed; an unknown name is refused by name."""
        known = {f.name for f in fields(self)} - {"name", "plan"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown profile settings {unknown}: known are {sorted(known)}")
        return replace(self, **settings)

    def describe(self) -> str:
        if self.name == "local":
            return "local profile: nothing limited, changes streamed at once"
        on = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "plan")}
        return f"hosted profile ({self.plan}): " + ", ".join(f"{k}={v}" for k, v in on.items())


def parse_setting(text: str) -> tuple[str, Any]:
    """`name=value` from the command line: a number, true/false, or none."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise ValueError(f"expected name=value, got {text!r}")
    lowered = raw.strip().lower()
    if lowered in ("none", "off"):
        return name, None
    if lowered in ("true", "false"):
        return name, lowered == "true"
    try:
        return name, int(raw)
    except ValueError:
        pass
    try:
        return name, float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number, true, false or none, got {raw!r}") from None
