"""Operator commands: `reactor stats` (with the schedules), `enqueue`, `retry`, `cancel`, `prune`,
and the fleet-wide limits: `limits`, `limit`, `pause` and `resume`.

They use the worker's configuration (`SUPABASE_URL` and the service-role key, checked the same
way) and the same HTTPS API: the `public.reactor_*` functions over PostgREST RPC, and a plain
PostgREST insert for `enqueue`, so an operator needs no database password. Every problem ends the
command with one line naming it and a non-zero exit; the key never appears in what is printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio

from reactor import config, handlers
from reactor.schedules import next_run
from reactor.store import MAX_BATCH, Rejected, Store, StoreError, UnreadableAnswer

PRUNE_BATCH = 10000  # the most public.reactor_prune deletes in one call, keeping each call short
INT32_MAX = 2**31 - 1
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_STATUSES = ("pending", "processing", "waiting", "completed", "failed", "cancelled")


class OperatorError(Exception):
    """The command cannot go on; the message says what to fix, in one line."""


def parse_payload(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise OperatorError(f"--payload is not valid JSON: {exc}") from None


def parse_run_at(raw: str) -> str:
    """An ISO 8601 timestamp; one without an offset is taken as UTC."""
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise OperatorError(
            f"--run-at {raw!r} is not an ISO 8601 timestamp: give e.g. 2030-01-31T09:00:00Z"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def parse_duration(raw: str) -> int:
    """Seconds in `7d`, `12h`, `30m`, `45s`, `2w` or a sum such as `1d12h`."""
    text = raw.strip().lower()
    if not re.fullmatch(r"(\d+[smhdw])+", text):
        raise OperatorError(
            f"--older-than {raw!r} is not a duration: give a number and a unit, s m h d or w, e.g. 7d"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+)([smhdw])", text))
    if seconds > INT32_MAX:
        raise OperatorError(f"--older-than {raw!r} is too long: at most {INT32_MAX} seconds (68 years)")
    return seconds


def parse_int(option: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise OperatorError(f"{option} {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise OperatorError(f"{option} must be between {low} and {high}, got {value}")
    return value


def parse_ids(raw: list[str]) -> list[int]:
    if len(raw) > MAX_BATCH:
        raise OperatorError(f"at most {MAX_BATCH} job ids a call, got {len(raw)}")
    return [parse_int("job id", item, 1, 2**63 - 1) for item in raw]


def parse_table(raw: str) -> str:
    if not config.TABLE_NAME.match(raw):
        raise OperatorError(
            f"--table {raw!r} is not a job table name: lowercase letters, digits, underscores"
        )
    return raw


async def stats(store: Store, tables: list[str]) -> dict[str, dict[str, Any]]:
    """Each table's statistics, its fleet-wide limits, and its schedules with their next run (none
    on a contract that predates them, sql/migrations/0011 and 0012)."""
    found = {table: await store.stats(table) for table in tables}
    for table, table_stats in found.items():
        try:
            table_stats["limits"] = await store.call("reactor_limits", {"p_table": table})
        except Rejected as exc:
            if exc.status != 404:
                raise
    try:
        listed = await store.schedules()
    except Rejected as exc:
        if exc.status != 404:
            raise
        return found
    now = datetime.fromisoformat(listed["now"])
    for table, table_stats in found.items():
        table_stats["schedules"] = [
            {**schedule, "next_run_at": next_run(schedule, now)}
            for schedule in listed["schedules"]
            if schedule["table"] == table
        ]
    return found


async def enqueue(store: Store, table: str, job: dict[str, Any]) -> int:
    try:
        return await store.enqueue(table, job)
    except Rejected as exc:
        if exc.status == 404:  # PostgREST: no such table
            raise OperatorError(
                f"{exc}: is {table!r} a job table? "
                f"Create one with select reactor.create_job_table('{table}');"
            ) from None
        raise


async def retry(
    store: Store, table: str, ids: list[int] | None, job_type: str | None, limit: int
) -> list[int]:
    found = await store.call(
        "reactor_retry", {"p_table": table, "p_ids": ids, "p_job_type": job_type, "p_limit": limit}
    )
    return found["retried"]


async def cancel(store: Store, table: str, ids: list[int]) -> dict[str, list[int]]:
    return await store.call("reactor_cancel", {"p_table": table, "p_ids": ids})


async def prune(store: Store, table: str, older_than_seconds: int) -> int:
    """Delete in batches until a batch comes back short: deleted jobs never come back."""
    total = 0
    while True:
        done = await store.call(
            "reactor_prune",
            {"p_table": table, "p_older_than_seconds": older_than_seconds, "p_limit": PRUNE_BATCH},
        )
        total += done["pruned"]
        if done["pruned"] < PRUNE_BATCH:
            return total


def render_stats(found: dict[str, dict[str, Any]], now: datetime | None = None) -> str:
    head = ["table", *_STATUSES, "due", "scheduled", "oldest due", "expired leases"]
    rows = [head]
    for table, s in found.items():
        age = s["oldest_due_age_seconds"]
        rows.append(
            [
                table,
                *(str(s["counts"][status]) for status in _STATUSES),
                str(s["due"]),
                str(s["scheduled"]),
                "-" if age is None else f"{float(age):.1f} s",
                str(s["expired_leases"]),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for table, s in found.items():
        if s["pending_by_type"]:
            types = ", ".join(f"{t} {n}" for t, n in sorted(s["pending_by_type"].items()))
            lines.append(f"pending in {table} by type: {types}")
        if s.get("limits"):
            lines.extend(f"limits: {line}" for line in render_limits(table, s["limits"]).splitlines())
    for table, s in found.items():
        if s.get("schedules"):
            lines.append(f"schedules in {table}:")
            lines.extend(_schedule_rows(s["schedules"], now))
    realtime = next((s["realtime"] for s in found.values() if "realtime" in s), None)
    if realtime is not None:  # one budget for the whole project
        lines.append(
            f"Realtime budget: {realtime['budget_per_second']} messages a second; "
            f"{realtime['withheld']} insert(s) withheld for it in all"
        )
    return "\n".join(lines)


def _schedule_rows(schedules: list[dict[str, Any]], now: datetime | None) -> list[str]:
    """The schedules as an indented table: times in each schedule's own zone, to the second."""
    rows = [["name", "cron", "zone", "job type", "next run", "last run", "engine"]]
    for s in schedules:
        upcoming = s["next_run_at"]
        late = upcoming is not None and now is not None and datetime.fromisoformat(upcoming) < now
        rows.append(
            [
                s["name"],
                s["cron"],
                s["time_zone"],
                s["job_type"],
                "-" if upcoming is None else _when(upcoming, s["time_zone"]) + (" (overdue)" if late else ""),
                "never" if s["last_run_at"] is None else _when(s["last_run_at"], s["time_zone"]),
                s["engine"],
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _when(value: str, zone: str) -> str:
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return value
    return datetime.fromisoformat(value).astimezone(tz).isoformat(" ", "seconds")


def _ids_line(label: str, ids: list[int]) -> str:
    return f"{label} {len(ids)} job(s)" + (f": {', '.join(map(str, ids))}" if ids else "")


async def _stats(store: Store, args: argparse.Namespace, table: str) -> str:
    found = await stats(store, [parse_table(t) for t in args.table] if args.table else [table])
    return json.dumps(found, indent=2) if args.json else render_stats(found, datetime.now(UTC))


async def _enqueue(store: Store, args: argparse.Namespace, table: str) -> str:
    if not 1 <= len(args.job_type) <= 200:
        raise OperatorError("TYPE, the job type, must be 1 to 200 characters")
    job: dict[str, Any] = {"job_type": args.job_type, "payload": parse_payload(args.payload)}
    if args.priority is not None:
        job["priority"] = parse_int("--priority", args.priority, -INT32_MAX - 1, INT32_MAX)
    if args.run_at is not None:
        job["run_at"] = parse_run_at(args.run_at)
    if args.max_attempts is not None:
        job["max_attempts"] = parse_int("--max-attempts", args.max_attempts, 1, 1000)
    return str(await enqueue(store, table, job))


async def _retry(store: Store, args: argparse.Namespace, table: str) -> str:
    ids = parse_ids(args.ids) or None
    limit = parse_int("--limit", args.limit, 1, MAX_BATCH)
    return _ids_line("retried", await retry(store, table, ids, args.type, limit))


async def _cancel(store: Store, args: argparse.Namespace, table: str) -> str:
    done = await cancel(store, table, parse_ids(args.ids))
    lines = [_ids_line("cancelled", done["cancelled"])]
    if done["not_cancelled"]:
        left = done["not_cancelled"]
        lines.append(f"left {len(left)} job(s) alone, finished or not found: {', '.join(map(str, left))}")
    return "\n".join(lines)


async def _prune(store: Store, args: argparse.Namespace, table: str) -> str:
    pruned = await prune(store, table, parse_duration(args.older_than))
    return f"pruned {pruned} job(s) finished more than {args.older_than} ago"


def render_limits(table: str, found: dict[str, dict[str, Any]]) -> str:
    if not found:
        return f"no limits in {table}"
    lines = []
    for job_type, limits in sorted(found.items()):
        parts = [f"concurrency {limits['concurrency']}"] if "concurrency" in limits else []
        if "rate" in limits:
            parts.append(f"rate {limits['rate']} per {limits['per_seconds']} s")
        if "per_user" in limits:
            parts.append(f"per user {limits['per_user']}")
        if limits.get("paused"):
            parts.append("paused")
        lines.append(f"{table} {job_type}: {', '.join(parts)}")
    return "\n".join(lines)


async def _limits(store: Store, args: argparse.Namespace, table: str) -> str:
    return render_limits(table, await store.call("reactor_limits", {"p_table": table}))


def _limit_change(args: argparse.Namespace) -> dict[str, Any]:
    change: dict[str, Any] = {}
    try:
        if args.concurrency is not None:
            change["concurrency"] = None if args.concurrency == "none" else int(args.concurrency)
        if args.rate is not None:
            if args.rate == "none":
                change |= {"rate": None, "per_seconds": None}
            else:
                change |= handlers.limits(None, args.rate, None) or {}
        if args.per_user is not None:
            change["per_user"] = None if args.per_user == "none" else int(args.per_user)
    except ValueError as exc:
        raise OperatorError(f"{exc}; give a number, a rate such as 2/s, or none to clear") from None
    if not change:
        raise OperatorError("give --concurrency, --rate or --per-user (none clears one)")
    return change


async def _set(store: Store, table: str, job_type: str, change: dict[str, Any]) -> str:
    try:
        await store.call("reactor_set_limits", {"p_table": table, "p_job_type": job_type, "p_limits": change})
    except Rejected as exc:
        raise OperatorError(str(exc)) from None
    found = await store.call("reactor_limits", {"p_table": table})
    return render_limits(table, {job_type: found[job_type]} if job_type in found else {})


async def _limit(store: Store, args: argparse.Namespace, table: str) -> str:
    return await _set(store, table, args.job_type, _limit_change(args))


async def _pause(store: Store, args: argparse.Namespace, table: str) -> str:
    return await _set(store, table, args.job_type, {"paused": True})


async def _resume(store: Store, args: argparse.Namespace, table: str) -> str:
    return await _set(store, table, args.job_type, {"paused": False})


Action = Callable[[Store, argparse.Namespace, str], Awaitable[str]]


def _command(name: str, action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            settings = config.load()
            table = parse_table(args.table) if isinstance(args.table, str) else settings.table
        except config.ConfigError as exc:
            for problem in exc.problems:
                print(f"reactor {name}: {problem}", file=sys.stderr)
            return 2
        except OperatorError as exc:
            print(f"reactor {name}: {exc}", file=sys.stderr)
            return 2

        async def main() -> str:
            store = Store(settings.supabase_url, settings.service_key)
            try:
                return await action(store, args, table)
            finally:
                await store.aclose()

        try:
            print(anyio.run(main))
        except OperatorError as exc:
            print(f"reactor {name}: {exc}", file=sys.stderr)
            return 2
        # A 2xx answer that is not JSON: another server at that address.
        except (UnreadableAnswer, ValueError):
            print(
                f"reactor {name}: {settings.supabase_url} did not answer as the Supabase API", file=sys.stderr
            )
            return 1
        except StoreError as exc:
            hint = ""
            if isinstance(exc, Rejected) and exc.status in (401, 403):
                hint = ": is the key in SUPABASE_SERVICE_ROLE_KEY the project's service-role key?"
            print(f"reactor {name}: {exc}{hint}", file=sys.stderr)
            return 1
        return 0

    return run


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The operator subcommands of `reactor`; the table defaults to REACTOR_TABLE, else `jobs`."""
    table_help = "the job table (default: REACTOR_TABLE, else jobs)"

    stats_ = sub.add_parser("stats", help="job counts per status, due, scheduled, oldest due job's age")
    stats_.add_argument("--table", action="append", help=table_help + "; repeat for several")
    stats_.add_argument("--json", action="store_true", help="print JSON keyed by table, for scripts")
    stats_.set_defaults(run=_command("stats", _stats))

    enqueue_ = sub.add_parser("enqueue", help="add a job and print its id")
    enqueue_.add_argument("job_type", metavar="TYPE", help="the handler's job type")
    enqueue_.add_argument("--payload", default="{}", help="the handler's input, as JSON (default {})")
    enqueue_.add_argument("--table", help=table_help)
    enqueue_.add_argument("--priority", help="higher runs first (default 0)")
    enqueue_.add_argument(
        "--run-at", help="ISO 8601 time to run at, UTC unless it has an offset (default now)"
    )
    enqueue_.add_argument("--max-attempts", help="attempts before it fails for good, 1 to 1000 (default 5)")
    enqueue_.set_defaults(run=_command("enqueue", _enqueue))

    retry_ = sub.add_parser("retry", help="put failed jobs back to pending with fresh attempts")
    retry_.add_argument("ids", nargs="*", metavar="ID", help="the failed jobs (default: every failed job)")
    retry_.add_argument("--type", help="only failed jobs of this job type")
    retry_.add_argument("--table", help=table_help)
    retry_.add_argument("--limit", default=str(MAX_BATCH), help=f"at most this many (default {MAX_BATCH})")
    retry_.set_defaults(run=_command("retry", _retry))

    cancel_ = sub.add_parser(
        "cancel", help="cancel pending and running jobs (a running one's handler is stopped)"
    )
    cancel_.add_argument("ids", nargs="+", metavar="ID", help="the jobs to cancel")
    cancel_.add_argument("--table", help=table_help)
    cancel_.set_defaults(run=_command("cancel", _cancel))

    prune_ = sub.add_parser(
        "prune", help="delete completed, failed and cancelled jobs that finished long ago"
    )
    prune_.add_argument("--older-than", required=True, help="e.g. 7d, 12h, 30m, 1d12h")
    prune_.add_argument("--table", help=table_help)
    prune_.set_defaults(run=_command("prune", _prune))

    limits_ = sub.add_parser("limits", help="the fleet-wide limits of each job type, and paused types")
    limits_.add_argument("--table", help=table_help)
    limits_.set_defaults(run=_command("limits", _limits))

    limit_ = sub.add_parser("limit", help="set a job type's fleet-wide limits; none clears one")
    limit_.add_argument("job_type", metavar="TYPE", help="the job type")
    limit_.add_argument("--concurrency", help="at most this many running at once across every worker")
    limit_.add_argument("--rate", help="at most this many starts in a period: 2/s, 100/m, 5/10s, 1000/d")
    limit_.add_argument("--per-user", help="at most this many running at once per owner (user_id)")
    limit_.add_argument("--table", help=table_help)
    limit_.set_defaults(run=_command("limit", _limit))

    for name, action, text in (
        ("pause", _pause, "claim no more jobs of a type, on any worker, until resumed"),
        ("resume", _resume, "claim a paused job type's jobs again"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("job_type", metavar="TYPE", help="the job type")
        command.add_argument("--table", help=table_help)
        command.set_defaults(run=_command(name, action))
