"""Sends job outcomes in batches: completes and fails that finish while a call is in flight go
together in the next one, so a burst of short jobs costs a few RPCs, not one per job.

A report whose lease turned out stale is logged and dropped: the job has a new owner, and
overwriting it is exactly what the lease token prevents.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from loguru import logger

from reactor.store import MAX_BATCH, Rejected, Store, StoreError

_RESULT_KEYS = {"complete": ("completed",), "fail": ("retried", "failed")}


@dataclass
class Report:
    kind: str  # "complete" or "fail"
    table: str
    item: dict[str, Any]  # the RPC's batch item: id, lease_token, result | error, retry_at, permanent
    log: Any  # the job's bound logger
    fields: dict[str, Any]  # outcome, duration_ms: added to the job's log line


class Reporter:
    def __init__(self, store: Store, give_up_seconds: float) -> None:
        self._store = store
        self._give_up_seconds = give_up_seconds
        self._send: MemoryObjectSendStream[Report]
        self._receive: MemoryObjectReceiveStream[Report]
        self._send, self._receive = anyio.create_memory_object_stream[Report](math.inf)
        self._done = anyio.Event()

    def submit(self, report: Report) -> None:
        self._send.send_nowait(report)

    def close(self) -> None:
        """No more reports will come: `run` returns once everything queued is sent."""
        self._send.close()

    async def drained(self) -> None:
        await self._done.wait()

    async def run(self) -> None:
        try:
            await self._send_all()
        finally:
            self._done.set()

    async def _send_all(self) -> None:
        async for first in self._receive:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            groups: dict[tuple[str, str], list[Report]] = defaultdict(list)
            for report in batch:
                groups[(report.kind, report.table)].append(report)
            for (kind, table), reports in groups.items():
                await self._send_group(kind, table, reports)

    async def _send_group(self, kind: str, table: str, reports: list[Report]) -> None:
        items = [r.item for r in reports]
        call = self._store.complete if kind == "complete" else self._store.fail
        delay = 0.1
        with anyio.move_on_after(self._give_up_seconds) as scope:
            while True:
                try:
                    answer = await call(table, items)
                    break
                except Rejected as exc:
                    for report in reports:
                        report.log.bind(**report.fields).error(f"could not record the outcome: {exc}")
                    return
                except StoreError as exc:
                    logger.warning(f"recording {len(items)} outcomes failed, retrying: {exc}")
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        if scope.cancelled_caught:
            for report in reports:
                report.log.bind(**report.fields).error("outcome lost: the API stayed unreachable")
            return
        self._log(kind, reports, answer)

    def _log(self, kind: str, reports: list[Report], answer: dict[str, Any]) -> None:
        stale = set(answer.get("stale", []))
        dead = set(answer.get("failed", [])) if kind == "fail" else set()
        for report in reports:
            job_id = report.item["id"]
            log = report.log.bind(**report.fields)
            if job_id in stale:
                log.bind(outcome="stale").warning("lease lost before the outcome was recorded; discarded")
            elif kind == "complete":
                log.info("job completed")
            elif job_id in dead:
                log.bind(outcome="failed").warning(f"job failed for good: {report.item['error']}")
            else:
                log.warning(f"job will be retried at {report.item.get('retry_at')}: {report.item['error']}")
