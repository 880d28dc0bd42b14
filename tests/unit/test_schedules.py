"""Schedules on the Python side: cron times in a zone across DST (reactor/cron.py), `@app.cron`
declarations (reactor/app.py, reactor/schedules.py) and the scheduler (reactor/scheduler.py) run
whole on the in-memory store. tests/contract/test_schedules.py holds the SQL to the same rules, and
tests/worker/test_schedules.py runs real worker processes."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from loguru import logger

from reactor import Job, Reactor
from reactor.config import load
from reactor.cron import Cron, CronError
from reactor.memory import MemoryStore
from reactor.scheduler import Scheduler
from reactor.schedules import Schedule
from reactor.store import Rejected

pytestmark = pytest.mark.anyio

BERLIN = ZoneInfo("Europe/Berlin")


def local_day(expression: str, zone: str, day: datetime) -> list[str]:
    """The times of one local day, as local wall times with their offsets."""
    start = day.replace(tzinfo=ZoneInfo(zone))
    times = Cron.parse(expression, zone).times(
        start - timedelta(microseconds=1), start + timedelta(days=1), 1000
    )
    return [t.astimezone(ZoneInfo(zone)).strftime("%H:%M%z") for t in times if t < start + timedelta(days=1)]


def test_an_hourly_schedule_runs_23_times_the_spring_day_and_25_the_autumn_day():
    spring = local_day("0 * * * *", "Europe/Berlin", datetime(2025, 3, 30))
    autumn = local_day("0 * * * *", "Europe/Berlin", datetime(2025, 10, 26))
    assert (len(spring), len(autumn)) == (23, 25)
    assert spring[:3] == ["00:00+0100", "01:00+0100", "03:00+0200"]
    assert autumn[2:5] == ["02:00+0200", "02:00+0100", "03:00+0100"]


def test_a_fixed_time_in_the_skipped_hour_runs_as_the_clock_jumps_and_a_repeated_one_runs_once():
    assert local_day("30 2 * * *", "Europe/Berlin", datetime(2025, 3, 30)) == ["03:00+0200"]
    assert local_day("30 2 * * *", "Europe/Berlin", datetime(2025, 10, 26)) == ["02:30+0200"]
    # New York changes at 02:00 on other days.
    assert local_day("30 1 * * *", "America/New_York", datetime(2025, 11, 2)) == ["01:30-0400"]
    assert local_day("30 2 * * *", "America/New_York", datetime(2025, 3, 9)) == ["03:00-0400"]


def test_a_zone_moves_the_instants_and_utc_does_not():
    nine = datetime(2025, 1, 6, 8, tzinfo=UTC)
    assert Cron.parse("0 9 * * 1", "Europe/Berlin").next_after(nine - timedelta(hours=1)) == nine
    assert Cron.parse("0 9 * * 1", "UTC").next_after(nine) == nine + timedelta(hours=1)
    summer = datetime(2025, 7, 7, 7, tzinfo=UTC)
    assert Cron.parse("0 9 * * 1", "Europe/Berlin").next_after(summer - timedelta(hours=1)) == summer


def test_six_fields_put_seconds_first_and_times_are_strictly_after_and_up_to_the_end():
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    times = Cron.parse("*/2 * * * * *").times(start, start + timedelta(seconds=6), 10)
    assert times == [start + timedelta(seconds=s) for s in (2, 4, 6)]
    assert Cron.parse("*/2 * * * * *").times(start, start + timedelta(seconds=60), 5)[
        -1
    ] == start + timedelta(seconds=10)
    assert Cron.parse("0 0 29 2 *").next_after(start) == datetime(2028, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    "expression, zone, message",
    [
        ("* * * *", "UTC", "not five fields"),
        ("61 * * * *", "UTC", "Bad minute"),
        ("0 0 31 2 *", "UTC", "Bad day-of-month"),
        ("* * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("* * * * *", "../etc/passwd", "unknown time zone"),
    ],
)
def test_unreadable_expressions_and_zones_are_refused_with_the_reason(expression, zone, message):
    with pytest.raises(CronError, match=message):
        Cron.parse(expression, zone)


def test_app_cron_declares_a_schedule_for_its_handler_above_or_below_it():
    app = Reactor()

    @app.cron("0 3 * * *", time_zone="Europe/Berlin", payload={"older_than": "7d"}, catch_up=7200)
    @app.handler("prune", max_attempts=2)
    async def prune(job: Job) -> None: ...

    @app.handler("digest", table="emails")
    @app.cron("0 9 * * 1", name="weekly-digest")
    async def digest(job: Job) -> None: ...

    assert app.schedules("jobs") == [
        Schedule("prune", "0 3 * * *", "prune", "jobs", {"older_than": "7d"}, "Europe/Berlin", 7200, 0, 2),
        Schedule("weekly-digest", "0 9 * * 1", "digest", "emails"),
    ]


def test_app_cron_refuses_a_bad_schedule_when_decorating():
    app = Reactor()
    with pytest.raises(ValueError, match="schedule tidy: unknown time zone 'Moon/Base'"):

        @app.cron("* * * * *", time_zone="Moon/Base")
        async def tidy(job: Job) -> None: ...

    async def sweep(job: Job) -> None: ...

    with pytest.raises(ValueError, match="catch_up must be from 1"):
        app.cron("* * * * *", catch_up=0)(sweep)
    assert app.schedules("jobs") == []


def test_a_cron_without_a_handler_or_two_schedules_of_one_name_stop_the_start():
    app = Reactor()

    @app.cron("* * * * *")
    async def orphan(job: Job) -> None: ...

    with pytest.raises(ValueError, match="orphan: it is not a handler"):
        app.schedules("jobs")
    other = Reactor()

    @other.cron("0 * * * *")
    @other.cron("30 * * * *")
    @other.handler("twice")
    async def twice(job: Job) -> None: ...

    with pytest.raises(ValueError, match="two schedules are named 'twice'"):
        other.schedules("jobs")


QUICK = {
    "supabase_url": "http://memory.invalid",
    "service_key": "unused-by-the-memory-store",
    "realtime": False,
    "lease_seconds": 3,
    "poll_fast_seconds": 0.05,
    "poll_slow_seconds": 0.05,
    "reap_seconds": 0.1,
    "stats_seconds": 30.0,
    "grace_seconds": 2.0,
    "health_port": None,
}


@asynccontextmanager
async def serving(app: Reactor, store: MemoryStore, worker_id: str) -> AsyncIterator[Reactor]:
    async with anyio.create_task_group() as group:
        group.start_soon(app.serve, load({}, **QUICK, worker_id=worker_id), False, store)
        try:
            yield app
        finally:
            app.stop()


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.01)
    return value


def ticking_app(ran: list[datetime]) -> Reactor:
    app = Reactor()

    @app.cron("* * * * * *", name="every-second", catch_up=60)
    @app.handler("tick")
    async def tick(job: Job) -> None:
        ran.append(job.run_at)

    return app


def scheduled(store: MemoryStore) -> list[datetime]:
    return sorted(r.run_at for r in store.tables["jobs"].values() if r.job_type == "tick")


async def test_three_workers_on_one_store_enqueue_one_job_per_second_and_run_it():
    store, ran = MemoryStore(), []
    apps = [ticking_app(ran) for _ in range(3)]
    async with serving(apps[0], store, "a"), serving(apps[1], store, "b"), serving(apps[2], store, "c"):
        await until(lambda: len(scheduled(store)) >= 3)
    times = scheduled(store)
    assert len(times) == len(set(times)) and all(t.microsecond == 0 for t in times)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))
    assert sorted(ran) == times[: len(ran)] and len(ran) >= 2


async def test_times_missed_while_no_worker_ran_are_caught_up_within_the_window_only():
    store, ran = MemoryStore(), []
    app = ticking_app(ran)
    async with serving(app, store, "a"):
        await until(lambda: store.schedules)
    # The fleet was down for two minutes; the schedule's window is one minute.
    store.schedules["every-second"].fired_through = datetime.now(UTC) - timedelta(seconds=120)
    async with serving(ticking_app(ran), store, "a"):
        await until(lambda: len(scheduled(store)) >= 60)
    times = scheduled(store)
    assert len(times) == len(set(times))
    assert min(times) > datetime.now(UTC) - timedelta(seconds=62)
    assert len(times) <= 62


async def test_an_idle_worker_sends_no_request_until_a_schedule_is_due():
    store = MemoryStore()
    app = Reactor()

    @app.cron("0 0 1 1 *")
    @app.handler("new_year")
    async def new_year(job: Job) -> None: ...

    async with serving(app, store, "a"):
        await until(lambda: store.schedules)
        await anyio.sleep(1.0)
    assert store.calls[("reactor_fire_schedules", "ok")] == 1


async def test_schedules_declared_elsewhere_for_its_job_types_are_fired_and_others_left_alone():
    store, ran = MemoryStore(), []
    declarations = [
        Schedule("from-sql", "* * * * * *", "tick", catch_up=60).declaration(),
        Schedule("not-ours", "* * * * * *", "other", catch_up=60).declaration(),
    ]
    await store.fire_schedules("operator", {}, declarations, [])
    app = Reactor()

    @app.handler("tick")
    async def tick(job: Job) -> None:
        ran.append(job.run_at)

    async with serving(app, store, "a"):
        await until(lambda: len(ran) >= 2)
    assert {r.job_type for r in store.tables["jobs"].values()} == {"tick"}


class WithoutSchedules(MemoryStore):
    """A project whose contract predates schedules: PostgREST answers 404 for the function."""

    async def fire_schedules(self, *args: Any) -> dict[str, Any]:
        self.calls[("reactor_fire_schedules", "rejected")] += 1
        raise Rejected("reactor_fire_schedules: Could not find the function (HTTP 404)", 404)


async def test_a_worker_on_a_contract_without_schedules_says_so_once_and_works_on():
    store, lines = WithoutSchedules(), []
    app = Reactor()

    @app.cron("* * * * * *")
    @app.handler("tick")
    async def tick(job: Job) -> str:
        return "ran"

    sink = logger.add(lambda message: lines.append(str(message)), level="ERROR")
    try:
        job_id = await store.enqueue("jobs", {"job_type": "tick"})
        async with serving(app, store, "a"):
            await until(lambda: store.row("jobs", job_id)["status"] == "completed")
            await anyio.sleep(0.3)
    finally:
        logger.remove(sink)
    assert store.calls[("reactor_fire_schedules", "rejected")] == 1
    assert any("apply sql/migrations/0011_schedules.sql" in line for line in lines)


async def test_a_scheduler_waits_for_the_next_time_by_the_databases_clock():
    store = MemoryStore()
    declared = [Schedule("hourly", "0 * * * *", "tick")]
    scheduler = Scheduler(store, "a", {"jobs": ["tick"]}, declared, Counter(), refresh_seconds=7200)
    with anyio.move_on_after(0.2):
        await scheduler.run()
    now = datetime.now(UTC)
    top = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert abs(scheduler._wait() - (top - now).total_seconds()) < 1
    scheduler._offset = top - timedelta(seconds=5) - now  # the database's clock is 5 s before the hour
    assert 4 < scheduler._wait() < 6
