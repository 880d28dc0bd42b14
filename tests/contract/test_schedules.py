"""Schedules (sql/schema.sql, section 9b): declared in SQL or by workers, each time enqueued once
however many workers fire it, missed times caught up within the window and skipped beyond it, and
the pg_cron engine against a stand-in for pg_cron's `cron.schedule`."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import asyncpg
import pytest

from tests.support.contract import install_pg_cron_stand_in, rpc

pytestmark = pytest.mark.anyio

TABLES = {"jobs": ["report"]}


async def declare(
    db: asyncpg.Connection, name: str = "nightly", cron: str = "* * * * * *", **options
) -> dict:
    args = {"p_name": name, "p_cron": cron, "p_table": "jobs", "p_job_type": "report", **options}
    names = ", ".join(f"{key} => ${i + 1}" for i, key in enumerate(args))
    values = [json.dumps(v) if isinstance(v, dict) else v for v in args.values()]
    return json.loads(await db.fetchval(f"select reactor.schedule({names})", *values))


async def fire(
    db: asyncpg.Connection, times: list[datetime], name: str = "nightly", cron: str = "* * * * * *", **item
) -> dict:
    fired = {"name": name, "cron": cron, "time_zone": "UTC", "times": [t.isoformat() for t in times], **item}
    return await rpc(db, "reactor_fire_schedules", p_worker="w1", p_tables=TABLES, p_fire=[fired])


async def seconds_before_now(db: asyncpg.Connection, *seconds: int) -> list[datetime]:
    """Whole seconds `seconds` before the database's clock, oldest first."""
    now = await db.fetchval("select date_trunc('second', now())")
    return sorted(now - timedelta(seconds=s) for s in seconds)


async def backdate(db: asyncpg.Connection, name: str, seconds: int) -> None:
    """As if the schedule had been declared, and fired through, `seconds` ago: the fleet was down."""
    await db.execute(
        "update reactor.schedules set fired_through = now() - make_interval(secs => $2) where name = $1",
        name,
        seconds,
    )


async def jobs(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("select * from public.jobs where job_type = 'report' order by run_at")


async def test_eight_connections_firing_the_same_times_enqueue_each_time_once(database_url: str, db):
    await declare(db, p_catch_up_seconds=600)
    await backdate(db, "nightly", 120)
    times = await seconds_before_now(db, *range(1, 101))

    async def worker(n: int) -> dict:
        conn = await asyncpg.connect(database_url)
        try:
            # Each fires an overlapping slice, in several calls, the way workers do at the same time.
            mine = times[n * 5 :] + times[: n * 5]
            answers = [await fire(conn, mine[i : i + 30]) for i in range(0, len(mine), 30)]
        finally:
            await conn.close()
        return [e for a in answers for e in a["fired"][0]["enqueued"]]

    results = await asyncio.gather(*(worker(n) for n in range(8)))
    enqueued = [e for r in results for e in r]
    made = await jobs(db)
    assert len(made) == len(enqueued) == len({e["at"] for e in enqueued})
    # Later times reach the database before earlier ones (each slice is rotated): an earlier time
    # that comes after a later one was enqueued is refused, so every time is enqueued at most once,
    # and the times enqueued always increase.
    assert [j["run_at"] for j in made] == sorted({j["run_at"] for j in made})
    assert set(j["run_at"] for j in made) <= set(times)


async def test_every_due_time_is_enqueued_once_when_all_connections_send_all_times(database_url: str, db):
    await declare(db, p_catch_up_seconds=600)
    await backdate(db, "nightly", 60)
    times = await seconds_before_now(db, *range(1, 51))

    async def worker() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await fire(conn, times)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(8)))
    made = await jobs(db)
    assert [j["run_at"] for j in made] == times
    state = await db.fetchrow("select * from reactor.schedules where name = 'nightly'")
    assert state["fired_through"] == state["last_run_at"] == times[-1]
    assert state["last_job_id"] == made[-1]["id"]


async def test_a_job_carries_the_schedules_type_payload_priority_attempts_and_its_time(db):
    await declare(db, p_payload={"older_than": "7d"}, p_priority=3, p_max_attempts=2)
    await backdate(db, "nightly", 10)
    [at] = await seconds_before_now(db, 1)
    answer = await fire(db, [at])
    [job] = await jobs(db)
    [fired] = answer["fired"]
    assert (fired["name"], fired["current"], fired["skipped"]) == ("nightly", True, None)
    assert [(datetime.fromisoformat(e["at"]), e["id"]) for e in fired["enqueued"]] == [(at, job["id"])]
    assert (job["job_type"], json.loads(job["payload"]), job["priority"], job["max_attempts"]) == (
        "report",
        {"older_than": "7d"},
        3,
        2,
    )
    assert (job["status"], job["run_at"], job["user_id"]) == ("pending", at, None)


async def test_times_not_yet_due_or_before_the_declaration_are_not_enqueued(db):
    declared = await declare(db)
    now = await db.fetchval("select now()")
    before = datetime.fromisoformat(declared["fired_through"]) - timedelta(seconds=1)
    answer = await fire(db, [before, now + timedelta(seconds=5)])
    assert answer["fired"][0]["enqueued"] == [] and await jobs(db) == []


async def test_missed_times_within_the_catch_up_window_are_enqueued_once_and_older_ones_skipped(db):
    await declare(db, p_catch_up_seconds=30)
    await backdate(db, "nightly", 300)  # the fleet was down for five minutes
    times = await seconds_before_now(db, *range(1, 300))
    answer = await fire(db, times)
    made = [j["run_at"] for j in await jobs(db)]
    skipped = answer["fired"][0]["skipped"]
    window_start = datetime.fromisoformat(skipped["to"])
    assert timedelta(seconds=30) <= await db.fetchval("select now()") - window_start < timedelta(seconds=31)
    assert made == [t for t in times if t > window_start] and 29 <= len(made) <= 30
    assert datetime.fromisoformat(skipped["from"]) < times[0]
    # The skipped times stay skipped, even sent again.
    again = await fire(db, times)
    assert again["fired"][0]["enqueued"] == [] and again["fired"][0]["skipped"] is None
    assert len(await jobs(db)) == len(made)


async def test_a_call_fires_at_most_a_batch_of_times(db):
    await declare(db, p_catch_up_seconds=3600)
    await backdate(db, "nightly", 1200)
    times = await seconds_before_now(db, *range(1, 1002))
    with pytest.raises(asyncpg.RaiseError, match="times to fire must be between 0 and 1000, got 1001"):
        await fire(db, times)


async def test_a_worker_firing_an_older_definition_enqueues_nothing_and_learns_the_new_one(db):
    await declare(db, cron="* * * * * *")
    await backdate(db, "nightly", 10)
    before = await db.fetchval("select now()")
    redefined = await declare(db, cron="*/2 * * * * *")
    # A new cron starts afresh from its declaration.
    assert datetime.fromisoformat(redefined["fired_through"]) > before
    [at] = await seconds_before_now(db, 1)
    answer = await fire(db, [at], cron="* * * * * *")
    assert answer["fired"][0] == {"name": "nightly", "current": False, "enqueued": [], "skipped": None}
    assert [s["cron"] for s in answer["schedules"]] == ["*/2 * * * * *"]


async def test_declaring_the_same_schedule_again_changes_nothing(db):
    first = await declare(db, p_time_zone="Europe/Berlin")
    await backdate(db, "nightly", 10)
    before = await db.fetchrow("select * from reactor.schedules")
    again = await declare(db, p_time_zone="Europe/Berlin")
    assert await db.fetchrow("select * from reactor.schedules") == before
    assert again["time_zone"] == first["time_zone"] == "Europe/Berlin"


async def test_a_new_payload_or_priority_keeps_the_times_a_changed_cron_starts_over(db):
    await declare(db)
    await backdate(db, "nightly", 10)
    fired_through = await db.fetchval("select fired_through from reactor.schedules")
    await declare(db, p_payload={"size": "large"}, p_priority=5)  # the same times, other jobs
    assert await db.fetchval("select fired_through from reactor.schedules") == fired_through
    await declare(db, cron="*/2 * * * * *")  # other times: none from before the change
    assert await db.fetchval(
        "select fired_through > $1::timestamptz + interval '9 seconds' from reactor.schedules", fired_through
    )


async def test_workers_declare_their_schedules_and_hear_only_those_of_their_job_types(db):
    declared = {
        "name": "digest",
        "table": "jobs",
        "job_type": "report",
        "cron": "0 9 * * 1",
        "time_zone": "America/New_York",
        "payload": {"kind": "weekly"},
        "priority": 1,
        "max_attempts": 3,
        "catch_up_seconds": 7200,
    }
    await declare(db, "other", p_job_type="other")
    answer = await rpc(db, "reactor_fire_schedules", p_worker="w1", p_tables=TABLES, p_declare=[declared])
    assert [s["name"] for s in answer["schedules"]] == ["digest"]
    [listed] = answer["schedules"]
    assert {k: listed[k] for k in ("job_type", "cron", "time_zone", "catch_up_seconds", "engine")} == {
        "job_type": "report",
        "cron": "0 9 * * 1",
        "time_zone": "America/New_York",
        "catch_up_seconds": 7200,
        "engine": "worker",
    }
    assert abs(datetime.fromisoformat(answer["now"]) - await db.fetchval("select now()")) < timedelta(
        seconds=5
    )
    stored = await db.fetchrow(
        "select payload, priority, max_attempts from reactor.schedules where name = 'digest'"
    )
    assert (json.loads(stored["payload"]), stored["priority"], stored["max_attempts"]) == (
        {"kind": "weekly"},
        1,
        3,
    )
    everything = await rpc(db, "reactor_schedules", p_table=None)
    assert [s["name"] for s in everything["schedules"]] == ["digest", "other"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "bad name!"}, "invalid schedule name"),
        ({"cron": "* * * *"}, "is not five fields"),
        ({"cron": "* * * * * * *"}, "is not five fields"),
        ({"cron": "* * * * $(rm)"}, "is not five fields"),
        ({"p_time_zone": "Mars/Olympus"}, 'unknown time zone "Mars/Olympus"'),
        ({"p_time_zone": None}, "unknown time zone"),
        ({"p_job_type": "reactor.probe"}, "job type must be"),
        ({"p_catch_up_seconds": 0}, "p_catch_up_seconds must be between 1 and 31622400"),
        ({"p_max_attempts": 0}, "p_max_attempts must be between 1 and 1000"),
        ({"p_engine": "lambda"}, "engine must be worker or pg_cron"),
        ({"p_table": "nope"}, 'unknown job table "nope"'),
        ({"p_engine": "pg_cron"}, "needs the pg_cron extension"),
    ],
)
async def test_bad_declarations_are_refused_with_the_reason(db, options, message):
    args = {k: v for k, v in options.items() if k not in ("name", "cron")}
    with pytest.raises(asyncpg.RaiseError, match=message):
        await declare(db, options.get("name", "nightly"), options.get("cron", "* * * * *"), **args)
    assert await db.fetchval("select count(*) from reactor.schedules") == 0


async def test_a_payload_beyond_the_bounds_every_row_obeys_is_refused(db):
    deep: dict = {}
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(asyncpg.RaiseError, match="nested deeper than 32 levels"):
        await declare(db, p_payload=deep)


async def test_unscheduling_deletes_the_schedule_and_keeps_its_jobs(db):
    await declare(db)
    await backdate(db, "nightly", 5)
    await fire(db, await seconds_before_now(db, 1))
    assert await db.fetchval("select reactor.unschedule('nightly')") is True
    assert await db.fetchval("select reactor.unschedule('nightly')") is False
    assert len(await jobs(db)) == 1


@pytest.fixture
async def pg_cron(db: asyncpg.Connection) -> asyncpg.Connection:
    await install_pg_cron_stand_in(db)
    return db


async def test_the_pg_cron_engine_registers_a_cron_job_that_enqueues_each_minute_once(pg_cron):
    db = pg_cron
    await declare(db, "nightly", "*/5 * * * *", p_engine="pg_cron")
    [registered] = await db.fetch("select jobname, schedule, command from cron.job")
    assert (registered["jobname"], registered["schedule"]) == ("reactor:nightly", "*/5 * * * *")
    assert registered["command"] == "select reactor.fire_schedule('nightly')"
    await backdate(db, "nightly", 120)
    first = await db.fetchval(registered["command"])
    again = await db.fetchval(registered["command"])  # pg_cron started twice in one minute
    [job] = await jobs(db)
    assert (first, again) == (job["id"], None)
    assert job["run_at"] == await db.fetchval("select date_trunc('minute', now())")
    # Workers leave it alone: what they send for it enqueues nothing.
    answer = await fire(db, await seconds_before_now(db, 0), cron="*/5 * * * *")
    assert answer["fired"][0]["current"] is False and answer["schedules"][0]["engine"] == "pg_cron"


async def test_a_worker_declaring_a_pg_cron_schedule_keeps_it_with_pg_cron(pg_cron):
    db = pg_cron
    await declare(db, "nightly", "0 3 * * *", p_engine="pg_cron")
    declared = {
        "name": "nightly",
        "table": "jobs",
        "job_type": "report",
        "cron": "0 4 * * *",
        "time_zone": "UTC",
    }
    answer = await rpc(db, "reactor_fire_schedules", p_worker="w1", p_tables=TABLES, p_declare=[declared])
    assert [(s["cron"], s["engine"]) for s in answer["schedules"]] == [("0 4 * * *", "pg_cron")]
    assert await db.fetchval("select schedule from cron.job where jobname = 'reactor:nightly'") == "0 4 * * *"


async def test_moving_a_schedule_back_to_the_workers_or_deleting_it_removes_its_cron_job(pg_cron):
    db = pg_cron
    await declare(db, "a", "0 3 * * *", p_engine="pg_cron")
    await declare(db, "b", "0 3 * * *", p_engine="pg_cron")
    await declare(db, "a", "0 3 * * *")
    assert await db.fetchval("select reactor.unschedule('b')") is True
    assert await db.fetch("select * from cron.job") == []


@pytest.mark.parametrize(
    "cron, zone", [("0 3 * * *", "Europe/Berlin"), ("*/5 * * * * *", "UTC")], ids=["zone", "seconds"]
)
async def test_the_pg_cron_engine_takes_only_utc_five_field_schedules(pg_cron, cron, zone):
    with pytest.raises(asyncpg.RaiseError, match="pg_cron reads five-field expressions in UTC"):
        await declare(pg_cron, "nightly", cron, p_engine="pg_cron", p_time_zone=zone)


async def test_maintenance_in_pg_cron_reaps_every_minute_and_prunes_nightly(pg_cron):
    db = pg_cron
    await db.execute("select reactor.schedule_maintenance('jobs', interval '7 days')")
    registered = {r["jobname"]: r for r in await db.fetch("select * from cron.job")}
    assert {n: (r["schedule"], r["command"]) for n, r in registered.items()} == {
        "reactor:reap:jobs": ("* * * * *", "select public.reactor_reap('jobs')"),
        "reactor:prune:jobs": ("17 3 * * *", "select public.reactor_prune('jobs', 604800, 100000)"),
    }
    old = await db.fetchval(
        "insert into public.jobs (job_type, status, completed_at) values ('t', 'completed', now() - interval '8 days') returning id"
    )
    assert json.loads(await db.fetchval(registered["reactor:prune:jobs"]["command"])) == {"pruned": 1}
    assert await db.fetchval("select count(*) from public.jobs where id = $1", old) == 0
    await db.execute("select reactor.schedule_maintenance('jobs', null)")
    assert [r["jobname"] for r in await db.fetch("select jobname from cron.job")] == ["reactor:reap:jobs"]
