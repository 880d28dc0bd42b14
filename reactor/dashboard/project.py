"""Every read and action of the dashboard, over the API with the service-role key.

Reads are PostgREST table requests shaped to stay on the job table's indexes, so that a page costs
the same with a million jobs as with a hundred: recent outcomes walk the `_finished_idx` index on
`completed_at` (finished rows only) from now backwards, failed jobs likewise, running jobs the
`_lease_idx` index (processing rows only), and a job its primary key. Actions are the operator
functions `reactor_retry` and `reactor_cancel`, and deletes of finished rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reactor.store import MAX_BATCH, Store

FINISHED = "in.(completed,failed,cancelled)"
JOB_COLUMNS = (
    "id,job_type,payload,priority,run_at,max_attempts,user_id,status,attempts,result,last_error,"
    "progress,progress_message,locked_by,lease_expires_at,created_at,started_at,completed_at,updated_at,"
    "parent_id,resumed"
)
CHILD_COLUMNS = "id,job_type,child_key,status,attempts,last_error"
LOG_COLUMNS = "attempt,level,message,logged_at"
SHOWN = 200  # children and log lines a job's page shows: the first ones
LIST_COLUMNS = "id,job_type,attempts,max_attempts,last_error,created_at,completed_at"
ACTIVITY_COLUMNS = "job_type,status,created_at,run_at,started_at,completed_at"
RUNNING_COLUMNS = "id,job_type,locked_by,lease_expires_at,started_at,attempts,progress"
PROBE_JOB_TYPE = "reactor.probe"  # the workers' probe rows (reactor.probe_job_type())


@dataclass(frozen=True)
class FailedFilter:
    """Which failed jobs a list or a bulk action means: by type, by a piece of the error, and by
    when they failed."""

    job_type: str | None = None
    error: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def params(self) -> list[tuple[str, str]]:
        params = [("status", "eq.failed")]
        if self.job_type:
            params.append(("job_type", f"eq.{self.job_type}"))
        if self.error:
            params.append(("last_error", f"ilike.*{_like_literal(self.error)}*"))
        if self.since:
            params.append(("completed_at", f"gte.{self.since.isoformat()}"))
        if self.until:
            params.append(("completed_at", f"lt.{self.until.isoformat()}"))
        return params

    def describe(self) -> str:
        parts = [f"of type {self.job_type}" if self.job_type else "of every type"]
        if self.error:
            parts.append(f"whose error contains {self.error!r}")
        if self.since:
            parts.append(f"failed from {self.since:%Y-%m-%d %H:%M} UTC")
        if self.until:
            parts.append(f"failed before {self.until:%Y-%m-%d %H:%M} UTC")
        return ", ".join(parts)


def _like_literal(text: str) -> str:
    """The text matched literally by `ilike`, except `*`, which PostgREST always reads as a wildcard."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Project:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def stats(self, table: str) -> dict[str, Any]:
        """The overview's numbers (reactor_overview): exact from partial indexes, but completed and
        cancelled estimated by the planner, so that no refresh reads the whole table."""
        return await self.store.call("reactor_overview", {"p_table": table})

    async def finished_since(self, table: str, since: datetime, limit: int) -> list[dict[str, Any]]:
        """Completed and failed jobs that finished after `since`, newest first, at most `limit`."""
        rows, _ = await self.store.select(
            table,
            [
                ("select", ACTIVITY_COLUMNS),
                ("status", "in.(completed,failed)"),
                ("completed_at", f"gte.{since.isoformat()}"),
                ("order", "completed_at.desc"),
                ("limit", str(limit)),
            ],
        )
        return rows

    async def schedules(self, table: str) -> list[dict[str, Any]]:
        """The schedules that enqueue into `table` (reactor_schedules), by name."""
        return (await self.store.call("reactor_schedules", {"p_table": table}))["schedules"]

    async def running(self, table: str, limit: int) -> list[dict[str, Any]]:
        rows, _ = await self.store.select(
            table,
            [
                ("select", RUNNING_COLUMNS),
                ("status", "eq.processing"),
                ("order", "lease_expires_at.asc"),
                ("limit", str(limit)),
            ],
        )
        return rows

    async def failed(
        self, table: str, which: FailedFilter, limit: int, offset: int = 0
    ) -> list[dict[str, Any]]:
        rows, _ = await self.store.select(
            table,
            [
                ("select", LIST_COLUMNS),
                *which.params(),
                ("order", "completed_at.desc,id.desc"),
                ("limit", str(limit)),
                ("offset", str(offset)),
            ],
        )
        return rows

    async def count_failed(self, table: str, which: FailedFilter) -> int:
        _, total = await self.store.select(
            table, [("select", "id"), *which.params(), ("limit", "0")], count=True
        )
        return total or 0

    async def job(self, table: str, job_id: int) -> dict[str, Any] | None:
        rows, _ = await self.store.select(table, [("select", JOB_COLUMNS), ("id", f"eq.{job_id}")])
        return rows[0] if rows else None

    async def children(self, table: str, job_id: int) -> list[dict[str, Any]]:
        """The job's first children, in spawn order (the child index)."""
        rows, _ = await self.store.select(
            table,
            [
                ("select", CHILD_COLUMNS),
                ("parent_id", f"eq.{job_id}"),
                ("order", "id"),
                ("limit", str(SHOWN)),
            ],
        )
        return rows

    async def log(self, table: str, job_id: int) -> list[dict[str, Any]]:
        """The job's first log lines (public.job_logs, by its job index)."""
        rows, _ = await self.store.select(
            "job_logs",
            [
                ("select", LOG_COLUMNS),
                ("job_table", f"eq.{table}"),
                ("job_id", f"eq.{job_id}"),
                ("order", "id"),
                ("limit", str(SHOWN)),
            ],
        )
        return rows

    async def retry(self, table: str, ids: list[int]) -> list[int]:
        found = await self.store.call("reactor_retry", {"p_table": table, "p_ids": ids, "p_limit": MAX_BATCH})
        return found["retried"]

    async def retry_matching(self, table: str, which: FailedFilter) -> list[int]:
        """Retry every failed job the filter matches, a batch of ids at a time, in id order: a retried
        job is pending and leaves the match, and the id bound moves past the ones left behind."""
        done: list[int] = []
        after = 0
        while True:
            rows, _ = await self.store.select(
                table,
                [
                    ("select", "id"),
                    *which.params(),
                    ("id", f"gt.{after}"),
                    ("order", "id.asc"),
                    ("limit", str(MAX_BATCH)),
                ],
            )
            if not rows:
                return done
            ids = [row["id"] for row in rows]
            done += await self.retry(table, ids)
            after = ids[-1]

    async def cancel(self, table: str, ids: list[int]) -> dict[str, list[int]]:
        return await self.store.call("reactor_cancel", {"p_table": table, "p_ids": ids})

    async def delete(self, table: str, ids: list[int]) -> list[int]:
        """Delete these jobs if they are finished; pending and running ones are left alone."""
        return await self.store.delete(
            table, [("id", f"in.({','.join(map(str, ids))})"), ("status", f"{FINISHED}")]
        )

    async def delete_matching(self, table: str, which: FailedFilter) -> int:
        return len(await self.store.delete(table, which.params()))
