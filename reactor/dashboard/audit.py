"""The action log: one line for every retry, cancel and delete, with who did it.

Each line is a loguru record whose fields (`event`, `who`, `action`, `table`, the ids or filter
and the outcome) are top-level keys of the JSON object `REACTOR_LOG_FORMAT=json` writes, which is
the dashboard's default.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

EVENT = "dashboard_action"


def action(who: str, name: str, table: str, **details: Any) -> None:
    summary = ", ".join(f"{k} {v}" for k, v in details.items())
    logger.bind(event=EVENT, who=who, action=name, table=table, **details).info(
        f"dashboard: {who} did {name} on {table}: {summary}"
    )
