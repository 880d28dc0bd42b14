"""Every call the worker makes to the database: the `public.reactor_*` functions over PostgREST RPC.

The worker talks HTTPS only (see DESIGN.md). Calls go straight through httpx with the headers
supabase-py sends, which keeps one pooled connection and no per-call builder overhead on the hot
path. Errors are sorted into what a caller can act on: `Unavailable` (retry later) and
`Rejected` (the request itself is wrong, or the key is).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx

MAX_BATCH = 1000  # reactor.max_batch() in sql/migrations/0001


class StoreError(Exception):
    """A reactor RPC did not succeed."""


class Unavailable(StoreError):
    """The API could not be reached or answered with a server error: try again later."""


class Rejected(StoreError):
    """The API refused the call: a wrong key, missing migrations or a bad argument."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Store:
    def __init__(self, supabase_url: str, service_key: str, timeout: float = 30.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"{supabase_url}/rest/v1/",
            headers={
                "apikey": service_key,
                "Authorization": f"Bearer {service_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            timeout=timeout,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )
        self.calls: Counter[tuple[str, str]] = Counter()  # (function, outcome) -> count, for /metrics

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, function: str, args: dict[str, Any]) -> Any:
        try:
            response = await self._client.post(f"rpc/{function}", json=args)
        except httpx.HTTPError as exc:
            self.calls[(function, "unavailable")] += 1
            raise Unavailable(f"{function}: cannot reach the API: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            self.calls[(function, "unavailable")] += 1
            raise Unavailable(f"{function}: the API answered {response.status_code}: {_reason(response)}")
        if response.status_code >= 400:
            self.calls[(function, "rejected")] += 1
            raise Rejected(
                f"{function}: {_reason(response)} (HTTP {response.status_code})", response.status_code
            )
        self.calls[(function, "ok")] += 1
        return response.json() if response.content else None

    async def claim(
        self, table: str, worker: str, job_types: Sequence[str], limit: int, lease_seconds: int
    ) -> list[dict[str, Any]]:
        return await self.call(
            "reactor_claim",
            {
                "p_table": table,
                "p_worker": worker,
                "p_job_types": list(job_types),
                "p_limit": min(limit, MAX_BATCH),
                "p_lease_seconds": lease_seconds,
            },
        )

    async def heartbeat(self, table: str, leases: list[dict[str, Any]], lease_seconds: int) -> dict[str, Any]:
        return await self.call(
            "reactor_heartbeat", {"p_table": table, "p_leases": leases, "p_lease_seconds": lease_seconds}
        )

    async def complete(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("reactor_complete", {"p_table": table, "p_jobs": jobs})

    async def fail(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("reactor_fail", {"p_table": table, "p_jobs": jobs})

    async def release(self, table: str, leases: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("reactor_release", {"p_table": table, "p_leases": leases})

    async def progress(
        self, table: str, job_id: int, lease_token: str, percent: int, message: str | None
    ) -> bool:
        return await self.call(
            "reactor_progress",
            {
                "p_table": table,
                "p_id": job_id,
                "p_lease_token": lease_token,
                "p_progress": percent,
                "p_message": message,
            },
        )

    async def tick(
        self,
        table: str,
        worker: str,
        job_types: Sequence[str],
        limit: int,
        lease_seconds: int,
        *,
        stats: bool,
        probe: bool,
        old_probe: int | None,
    ) -> dict[str, Any]:
        return await self.call(
            "reactor_tick",
            {
                "p_table": table,
                "p_worker": worker,
                "p_job_types": list(job_types),
                "p_limit": min(limit, MAX_BATCH),
                "p_lease_seconds": lease_seconds,
                "p_stats": stats,
                "p_probe": probe,
                "p_old_probe": old_probe,
            },
        )

    async def stats(self, table: str) -> dict[str, Any]:
        return await self.call("reactor_stats", {"p_table": table})

    async def enqueue(self, table: str, job: dict[str, Any]) -> int:
        """Insert one job row (for operators; frontends insert with their own key) and return its id."""
        response = await self._table_call(
            "post", table, json=job, params={"select": "id"}, headers={"Prefer": "return=representation"}
        )
        return response.json()[0]["id"]

    async def delete_probe(self, table: str, probe_id: int) -> None:
        await self._table_call("delete", table, params={"id": f"eq.{probe_id}"})

    async def _table_call(self, method: str, table: str, **kwargs: Any) -> httpx.Response:
        name = f"{method} {table}"
        try:
            response = await self._client.request(method.upper(), table, **kwargs)
        except httpx.HTTPError as exc:
            self.calls[(name, "unavailable")] += 1
            raise Unavailable(f"{name}: cannot reach the API: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            self.calls[(name, "rejected")] += 1
            raise Rejected(f"{name}: {_reason(response)} (HTTP {response.status_code})", response.status_code)
        self.calls[(name, "ok")] += 1
        return response


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("message", "details", "hint") if body.get(k)]
        return "; ".join(parts) or str(body)[:300]
    return str(body)[:300]
