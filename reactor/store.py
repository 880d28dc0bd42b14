"""Every call the worker makes to the database: the `public.reactor_*` functions over PostgREST RPC.

The worker talks HTTPS only: no database connection, so it runs anywhere the project's API
answers. Calls go straight to httpx's transport, its pool of kept-alive connections, with the
headers supabase-py sends: no query builder, and none of the client layer's per-request work (URL
merging, cookies, auth and redirect handling), which the worker never needs and which was a third
of a request's time (docs/benchmarks.md). Errors are sorted into what a caller can act on:
`Unavailable` (retry later), `Rejected` (the request itself is wrong, or the key is) and
`UnreadableAnswer` (what answered is not the API).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any, Protocol

import httpx

MAX_BATCH = 1000  # reactor.max_batch() (tests/contract/test_constants.py)
MAX_STANDBY_SLOTS = 16  # reactor.max_standby_slots() (tests/contract/test_constants.py)


class StoreError(Exception):
    """A reactor RPC did not succeed."""


class Unavailable(StoreError):
    """The API could not be reached or answered with a server error: try again later."""


class UnreadableAnswer(StoreError):
    """The API answered, but with a body the worker cannot read."""


class Rejected(StoreError):
    """The API refused the call: a wrong key, missing migrations or a bad argument."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class JobStore(Protocol):
    """The worker's calls, as every part of the worker sees them: `Store` makes them over the API,
    `reactor.memory.MemoryStore` answers them from memory for tests; tests/contract/test_store.py
    holds both to the same contract."""

    calls: Counter[tuple[str, str]]

    async def aclose(self) -> None: ...

    async def claim(
        self,
        table: str,
        worker: str,
        job_types: Sequence[str],
        limit: int,
        lease_seconds: int,
        standby_seconds: int = 0,
        heard: int | None = None,
    ) -> list[dict[str, Any]]: ...

    async def stand_down(self, table: str, worker: str) -> None: ...

    async def worker_topic(self, worker: str) -> str: ...

    async def declare_limits(self, table: str, limits: dict[str, dict[str, int]]) -> dict[str, Any]: ...

    async def heartbeat(
        self, table: str, leases: list[dict[str, Any]], lease_seconds: int
    ) -> dict[str, Any]: ...

    async def complete(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def fail(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def release(self, table: str, leases: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def snooze(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def spawn(
        self, table: str, parent_id: int, lease_token: str, children: list[dict[str, Any]]
    ) -> dict[str, Any]: ...

    async def wait(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def children(self, table: str, parent_id: int) -> list[dict[str, Any]]: ...

    async def log(self, table: str, lines: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def progress(
        self, table: str, job_id: int, lease_token: str, percent: int, message: str | None
    ) -> bool: ...

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
        standby_seconds: int = 0,
    ) -> dict[str, Any]: ...

    async def stats(self, table: str) -> dict[str, Any]: ...

    async def enqueue(self, table: str, job: dict[str, Any]) -> int: ...

    async def delete_probe(self, table: str, probe_id: int) -> None: ...

    async def fire_schedules(
        self,
        worker: str,
        tables: dict[str, list[str]],
        declare: list[dict[str, Any]],
        fire: list[dict[str, Any]],
    ) -> dict[str, Any]: ...


class Store:
    def __init__(self, supabase_url: str, service_key: str, timeout: float = 30.0) -> None:
        self._transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10)
        )
        self._base = httpx.URL(f"{supabase_url}/rest/v1/")
        self._headers = httpx.Headers(
            {
                "apikey": service_key,
                "Authorization": f"Bearer {service_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"reactor/{version('reactor')}",
            }
        )
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._rpc_urls: dict[tuple[str, str | None], httpx.URL] = {}
        self.calls: Counter[tuple[str, str]] = Counter()  # (function, outcome) -> count, for /metrics

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def call(self, function: str, args: dict[str, Any], select: str | None = None) -> Any:
        url = self._rpc_urls.get((function, select))
        if url is None:
            url = self._base.join(f"rpc/{function}")
            if select is not None:
                url = url.copy_merge_params({"select": select})
            self._rpc_urls[(function, select)] = url
        try:
            status, content, _ = await self._send("POST", url, _json(args))
        except httpx.HTTPError as exc:
            self.calls[(function, "unavailable")] += 1
            raise Unavailable(f"{function}: cannot reach the API: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status in (408, 429):
            self.calls[(function, "unavailable")] += 1
            raise Unavailable(f"{function}: the API answered {status}: {_reason(status, content)}")
        if status >= 400:
            self.calls[(function, "rejected")] += 1
            raise Rejected(f"{function}: {_reason(status, content)} (HTTP {status})", status)
        self.calls[(function, "ok")] += 1
        try:
            return json.loads(content) if content else None
        except (ValueError, RecursionError) as exc:
            raise UnreadableAnswer(
                f"{function}: the API's answer is not JSON this worker can read: {exc}"
            ) from exc

    async def _send(
        self, method: str, url: httpx.URL, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, httpx.Headers]:
        request_headers = self._headers
        if headers:
            request_headers = request_headers.copy()
            request_headers.update(headers)
        request = httpx.Request(
            method, url, headers=request_headers, content=body, extensions={"timeout": self._timeout}
        )
        response = await self._transport.handle_async_request(request)
        try:
            return response.status_code, await response.aread(), response.headers
        finally:
            await response.aclose()

    async def claim(
        self,
        table: str,
        worker: str,
        job_types: Sequence[str],
        limit: int,
        lease_seconds: int,
        standby_seconds: int = 0,
        heard: int | None = None,
    ) -> list[dict[str, Any]]:
        """Claim up to `limit` jobs; with `standby_seconds`, offer the slots left for hand-offs,
        less those of the hand-offs made that the worker had not `heard` of (its count of them in
        the table). The claim comes back as one JSON array (reactor_claim_jobs), which PostgREST's
        Max rows cannot cut as it cuts the rows of reactor_claim."""
        return await self.call(
            "reactor_claim_jobs",
            {
                "p_table": table,
                "p_worker": worker,
                "p_job_types": list(job_types),
                "p_limit": min(limit, MAX_BATCH),
                "p_lease_seconds": lease_seconds,
                "p_standby_seconds": standby_seconds,
                "p_heard": heard,
            },
        )

    async def stand_down(self, table: str, worker: str) -> None:
        await self.call("reactor_stand_down", {"p_table": table, "p_worker": worker})

    async def worker_topic(self, worker: str) -> str:
        """The private Realtime topic the database announces this worker's jobs on."""
        topic = await self.call("reactor_worker_topic", {"p_worker": worker})
        if not isinstance(topic, str):
            raise UnreadableAnswer(f"reactor_worker_topic answered {topic!r}, not a topic")
        return topic

    async def declare_limits(self, table: str, limits: dict[str, dict[str, int]]) -> dict[str, Any]:
        """Seed the fleet-wide limits of job types that have none; the limits as the database holds them."""
        return await self.call("reactor_declare_limits", {"p_table": table, "p_limits": limits})

    async def heartbeat(self, table: str, leases: list[dict[str, Any]], lease_seconds: int) -> dict[str, Any]:
        return await self.call(
            "reactor_heartbeat", {"p_table": table, "p_leases": leases, "p_lease_seconds": lease_seconds}
        )

    async def complete(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("reactor_complete", {"p_table": table, "p_jobs": jobs})

    async def fail(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("reactor_fail", {"p_table": table, "p_jobs": jobs})

    async def snooze(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("reactor_snooze", {"p_table": table, "p_jobs": jobs})

    async def release(self, table: str, leases: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("reactor_release", {"p_table": table, "p_leases": leases})

    async def spawn(
        self, table: str, parent_id: int, lease_token: str, children: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Make children of a running job: {"ids": [...]} in the order given, or {"stale": true}."""
        return await self.call(
            "reactor_spawn",
            {"p_table": table, "p_parent": parent_id, "p_lease_token": lease_token, "p_children": children},
        )

    async def wait(self, table: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("reactor_wait", {"p_table": table, "p_jobs": jobs})

    async def children(self, table: str, parent_id: int) -> list[dict[str, Any]]:
        answer = await self.call("reactor_children", {"p_table": table, "p_parent": parent_id})
        return answer["children"]

    async def log(self, table: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        """Write running jobs' log lines: {"written": n, "dropped": n (over the cap), "stale": [ids]}."""
        return await self.call("reactor_log", {"p_table": table, "p_lines": lines})

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
        standby_seconds: int = 0,
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
                "p_standby_seconds": standby_seconds,
            },
        )

    async def stats(self, table: str) -> dict[str, Any]:
        return await self.call("reactor_stats", {"p_table": table})

    async def fire_schedules(
        self,
        worker: str,
        tables: dict[str, list[str]],
        declare: list[dict[str, Any]],
        fire: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Declare schedules, enqueue the jobs of their due times (once each, whoever else sends
        them), and learn the schedules of these tables' job types (sql/schema.sql, section 9b)."""
        return await self.call(
            "reactor_fire_schedules",
            {"p_worker": worker, "p_tables": tables, "p_declare": declare, "p_fire": fire},
        )

    async def schedules(self, table: str | None = None) -> dict[str, Any]:
        """Every schedule, or one table's, with the database's clock (`reactor stats`)."""
        return await self.call("reactor_schedules", {"p_table": table})

    async def enqueue(self, table: str, job: dict[str, Any]) -> int:
        """Insert one job row (for operators; frontends insert with their own key) and return its id."""
        content = await self._table_call(
            "POST",
            table,
            {"select": "id"},
            _json(job),
            headers={"Prefer": "return=representation"},
        )
        return json.loads(content)[0]["id"]

    async def delete_probe(self, table: str, probe_id: int) -> None:
        await self._table_call("DELETE", table, {"id": f"eq.{probe_id}"})

    async def select(
        self, table: str, params: list[tuple[str, str]], *, count: bool = False
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Rows of a table read with PostgREST's filters (for the dashboard), and with `count` the
        number of rows that match, from Content-Range."""
        headers = {"Prefer": "count=exact"} if count else None
        content, answer = await self._table_exchange("GET", table, params, headers=headers)
        total = answer.get("Content-Range", "*/*").rpartition("/")[2]
        return json.loads(content), int(total) if total.isdigit() else None

    async def delete(self, table: str, params: list[tuple[str, str]]) -> list[int]:
        """Delete the rows PostgREST's filters match and return their ids."""
        content, _ = await self._table_exchange(
            "DELETE", table, [*params, ("select", "id")], headers={"Prefer": "return=representation"}
        )
        return [row["id"] for row in json.loads(content)]

    async def _table_call(
        self,
        method: str,
        table: str,
        params: dict[str, str],
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        return (await self._table_exchange(method, table, params, body, headers))[0]

    async def _table_exchange(
        self,
        method: str,
        table: str,
        params: dict[str, str] | list[tuple[str, str]],
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[bytes, httpx.Headers]:
        name = f"{method.lower()} {table}"
        url = self._base.join(table).copy_merge_params(params)
        try:
            status, content, answer = await self._send(method, url, body, headers)
        except httpx.HTTPError as exc:
            self.calls[(name, "unavailable")] += 1
            raise Unavailable(f"{name}: cannot reach the API: {type(exc).__name__}: {exc}") from exc
        if status >= 400:
            self.calls[(name, "rejected")] += 1
            raise Rejected(f"{name}: {_reason(status, content)} (HTTP {status})", status)
        self.calls[(name, "ok")] += 1
        return content, answer


def _json(value: Any) -> bytes:
    """A request body as httpx encodes `json=`: compact UTF-8, and NaN or infinity refused."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _reason(status: int, content: bytes) -> str:
    text = content.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300] or f"HTTP {status}"
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("message", "details", "hint") if body.get(k)]
        return "; ".join(parts) or str(body)[:300]
    return str(body)[:300]
