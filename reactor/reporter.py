"""Sends job outcomes in batches: completes and fails that finish while a call is in flight go
together in the next one, so a burst of short jobs costs a few RPCs, not one per job.

While the API is down, outcomes are retried until it answers, and the lease keeper keeps their
leases alive (`leases`), so a finished job is not run again just because its report waited; only
at shutdown is there a limit. A batch the API refuses is split, so one bad item (a result Postgres
cannot store) costs only its own job, which then fails for good with the reason. A report whose
lease turned out stale is logged and dropped: the job has a new owner, and overwriting it is
exactly what the lease token prevents.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from loguru import logger

from reactor.job import Job
from reactor.redact import Redactor
from reactor.store import MAX_BATCH, JobStore, Rejected, StoreError

# Told of each outcome the database recorded as final: (job, "completed" or "failed", batch item).
Recorded = Callable[[Job, str, dict[str, Any]], None]


@dataclass
class Report:
    kind: str  # "complete", "fail", "snooze" or "wait"
    table: str
    item: dict[str, Any]  # the RPC's batch item: id, lease_token, result | error, retry_at, permanent
    job: Job  # whose log line this report writes
    fields: dict[str, Any]  # outcome, duration_ms: added to the job's log line


class Reporter:
    def __init__(
        self,
        store: JobStore,
        give_up_seconds: float,
        redactor: Redactor,
        wake: Callable[[str], None],
        recorded: Recorded | None = None,
    ) -> None:
        self._store = store
        self._wake = wake  # claim from a table now: an outcome there resumed a waiting parent
        self._recorded = recorded  # completion hooks (None: none): told only what the answer says is final
        self._redactor = redactor  # every error stored in a row its owner reads passes through it
        self._give_up_seconds = give_up_seconds  # after close(): how long unsent outcomes may wait
        self._give_up = anyio.CancelScope()
        self._unsent: dict[tuple[str, int], str] = {}  # (table, id) -> lease token
        self._send: MemoryObjectSendStream[Report]
        self._receive: MemoryObjectReceiveStream[Report]
        self._send, self._receive = anyio.create_memory_object_stream[Report](math.inf)
        self._done = anyio.Event()

    def submit(self, report: Report) -> None:
        self._unsent[(report.table, report.item["id"])] = report.item["lease_token"]
        self._send.send_nowait(report)

    def leases(self) -> dict[str, list[dict[str, Any]]]:
        """The leases of finished jobs whose outcome is not recorded yet, by table."""
        by_table: dict[str, list[dict[str, Any]]] = {}
        for (table, job_id), token in self._unsent.items():
            by_table.setdefault(table, []).append({"id": job_id, "lease_token": token})
        return by_table

    def close(self) -> None:
        """No more reports will come: `run` returns once everything queued is sent, or gives up
        `give_up_seconds` from now; the reaper hands back what could not be recorded."""
        self._send.close()
        self._give_up.deadline = anyio.current_time() + self._give_up_seconds

    async def drained(self) -> None:
        await self._done.wait()

    async def run(self) -> None:
        try:
            await self._send_all()
        finally:
            self._done.set()

    async def _send_all(self) -> None:
        with self._give_up:
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
        for table, job_id in list(self._unsent):
            logger.bind(table=table, job_id=job_id).error(
                "outcome lost at shutdown: the API stayed unreachable; the reaper will hand the job back"
            )
        self._unsent.clear()

    async def _send_group(self, kind: str, table: str, reports: list[Report]) -> None:
        try:
            answer = await self._call(kind, table, [r.item for r in reports])
        except Rejected as exc:
            if len(reports) > 1:
                for report in reports:  # one bad item must not cost the others their outcome
                    await self._send_group(kind, table, [report])
                return
            await self._refused(kind, table, reports[0], exc)
            return
        self._log(kind, reports, answer)
        self._sent(table, reports)
        if self._recorded is not None:
            self._final(self._recorded, kind, reports, answer)
        if answer.get("resumed"):
            self._wake(table)

    async def _call(self, kind: str, table: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The API's answer, retrying for as long as it cannot be reached."""
        call = {"complete": self._store.complete, "snooze": self._store.snooze, "wait": self._store.wait}.get(
            kind, self._store.fail
        )
        if kind in ("fail", "snooze"):
            items = [{**item, "error": self._redactor.storable(item["error"])} for item in items]
        delay = 0.1
        while True:
            try:
                return await call(table, items)
            except Rejected:
                raise
            except StoreError as exc:
                logger.warning(f"recording {len(items)} outcomes failed, retrying: {exc}")
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _refused(self, kind: str, table: str, report: Report, exc: Rejected) -> None:
        """The API refused one outcome. A result it cannot store fails the job for good, with why;
        a refused failure (or a refused key) can only be logged, and the reaper takes the job."""
        log = report.job.logger.bind(**report.fields)
        if kind == "complete" and exc.status not in (401, 403):
            log.error(f"the result could not be recorded; failing the job: {exc}")
            item = {k: v for k, v in report.item.items() if k != "result"}
            failure = Report(
                "fail",
                table,
                {**item, "error": f"the result could not be recorded: {exc}"[:2000], "permanent": True},
                report.job,
                {**report.fields, "outcome": "failed"},
            )
            await self._send_group("fail", table, [failure])
            return
        log.error(f"could not record the outcome: {exc}")
        self._sent(table, [report])

    def _sent(self, table: str, reports: list[Report]) -> None:
        for report in reports:
            self._unsent.pop((table, report.item["id"]), None)

    def _final(self, recorded: Recorded, kind: str, reports: list[Report], answer: dict[str, Any]) -> None:
        """Tell `recorded` of the jobs the answer lists as completed, or failed for good."""
        if kind not in ("complete", "fail"):
            return
        final = set(answer.get("completed" if kind == "complete" else "failed", []))
        if not final:
            return
        for report in reports:
            if report.item["id"] in final:
                try:
                    recorded(report.job, "completed" if kind == "complete" else "failed", report.item)
                except Exception as exc:  # never the reporter's problem
                    report.job.logger.opt(exception=exc).error("completion hooks could not be queued")

    def _log(self, kind: str, reports: list[Report], answer: dict[str, Any]) -> None:
        stale = set(answer.get("stale", []))
        dead = set(answer.get("failed", [])) if kind == "fail" else set()
        for report in reports:
            job_id = report.item["id"]
            if kind == "complete" and job_id not in stale:
                # The hot path: fields as arguments (they join `extra`) cost nothing below the
                # log level, where a bind would build a logger per job. The message has no braces.
                logger.info("job completed", **report.job.log_context, **report.fields)
                continue
            log = report.job.logger.bind(**report.fields)
            if job_id in stale:
                log.bind(outcome="stale").warning("lease lost before the outcome was recorded; discarded")
            elif kind == "snooze":
                log.info(f"job snoozed until {report.item['retry_at']}, its attempt unspent")
            elif kind == "wait":
                if job_id in answer.get("resumed", []):
                    log.info("job's children have all finished; it runs again")
                else:
                    log.info("job waits for its children, its attempt unspent")
            elif job_id in dead:
                log.bind(outcome="failed").warning(f"job failed for good: {report.item['error']}")
            else:
                log.warning(f"job will be retried at {report.item.get('retry_at')}: {report.item['error']}")
