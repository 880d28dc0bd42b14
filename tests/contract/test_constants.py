"""Numbers and names both the SQL contract and the worker need live in the SQL; each Python mirror
is checked against it here, so neither side can change alone."""

import asyncpg
import pytest

from reactor.config import TABLE_NAME
from reactor.family import MAX_CHILDREN
from reactor.job_logs import MAX_LOG_LINES
from reactor.lease_keeper import HAND_OFF_SECONDS
from reactor.listener import PROBE_JOB_TYPE
from reactor.store import MAX_BATCH, MAX_STANDBY_SLOTS

pytestmark = pytest.mark.anyio


async def test_the_batch_limit_is_the_sqls(db: asyncpg.Connection):
    assert await db.fetchval("select reactor.max_batch()") == MAX_BATCH


async def test_the_standby_slot_limit_is_the_sqls(db: asyncpg.Connection):
    assert await db.fetchval("select reactor.max_standby_slots()") == MAX_STANDBY_SLOTS


async def test_the_children_limit_is_the_sqls(db: asyncpg.Connection):
    assert await db.fetchval("select reactor.max_children()") == MAX_CHILDREN


async def test_the_log_line_limit_is_the_sqls(db: asyncpg.Connection):
    assert await db.fetchval("select reactor.max_log_lines()") == MAX_LOG_LINES


async def test_the_probe_job_type_is_the_sqls(db: asyncpg.Connection):
    assert await db.fetchval("select reactor.probe_job_type()") == PROBE_JOB_TYPE


async def test_a_hand_off_is_leased_for_as_long_as_the_worker_expects(db: asyncpg.Connection):
    await db.execute(
        "insert into reactor.standby values ('jobs', 'w', array['t'], 1, now() + interval '1 minute')"
    )
    lease = await db.fetchval(
        "insert into public.jobs (job_type) values ('t')"
        " returning extract(epoch from lease_expires_at - clock_timestamp())"
    )
    assert HAND_OFF_SECONDS - 0.5 < float(lease) <= HAND_OFF_SECONDS


@pytest.mark.parametrize(
    "name",
    ["jobs2", "a", "a" * 48, "a" * 49, "Jobs", "2jobs", "job-s", "_jobs", "jobs_", "jöbs", "", "jobs\n"],
)
async def test_the_table_name_rule_is_the_sqls(db: asyncpg.Connection, name: str):
    try:
        await db.execute("select reactor.create_job_table($1)", name)
        accepted = True
    except asyncpg.RaiseError as exc:
        assert "invalid job table name" in str(exc)
        accepted = False
    assert accepted == bool(TABLE_NAME.match(name)), name
