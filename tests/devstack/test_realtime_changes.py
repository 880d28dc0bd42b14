"""postgres_changes through the unmodified supabase-py client: events, payload shape, filters."""

from __future__ import annotations

import json
import re
import uuid

import asyncpg
import pytest
from realtime import RealtimeSubscribeStates

from tests.support.realtime import client, insert_job, subscribe

pytestmark = pytest.mark.anyio

JOBS_COLUMNS = [
    ("id", "int8"), ("job_type", "text"), ("payload", "jsonb"), ("priority", "int4"),
    ("run_at", "timestamptz"), ("max_attempts", "int4"), ("user_id", "uuid"), ("status", "text"),
    ("attempts", "int4"), ("result", "jsonb"), ("last_error", "text"), ("progress", "int2"),
    ("progress_message", "text"), ("locked_by", "text"), ("lease_expires_at", "timestamptz"),
    ("lease_token", "uuid"), ("created_at", "timestamptz"), ("started_at", "timestamptz"),
    ("completed_at", "timestamptz"), ("updated_at", "timestamptz"), ("unique_key", "text"),
    ("parent_id", "int8"), ("child_key", "text"), ("resumed", "int4"),
]  # fmt: skip
COMMIT_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ISO_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00$")


async def test_insert_arrives_in_supabase_payload_shape(devstack, db: asyncpg.Connection) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "shape", {"event": "INSERT", "table": "jobs", "schema": "public"})
    owner = str(uuid.uuid4())
    job_id = await insert_job(db, "resize", priority=7, user_id=owner, payload={"w": 640, "tags": ["a"]})

    payload = await feed.next_change()

    assert set(payload) == {"data", "ids"}
    assert payload["ids"] == [feed.channel.postgres_changes_callbacks[0].id]
    data = payload["data"]
    assert set(data) == {"schema", "table", "commit_timestamp", "type", "errors", "columns", "record"}
    assert (data["schema"], data["table"], data["type"], data["errors"]) == ("public", "jobs", "INSERT", None)
    assert COMMIT_TIMESTAMP.match(data["commit_timestamp"])
    assert [(c["name"], c["type"]) for c in data["columns"]] == JOBS_COLUMNS
    record = data["record"]
    assert list(record) == [name for name, _ in JOBS_COLUMNS]
    assert record["id"] == job_id and record["priority"] == 7 and record["user_id"] == owner
    assert record["payload"] == {"w": 640, "tags": ["a"]} and record["result"] is None
    assert ISO_TIMESTAMP.match(record["created_at"])
    await sb.realtime.close()


async def test_update_and_delete_carry_the_primary_key_as_old_record(
    devstack, db: asyncpg.Connection
) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(
        sb, "lifecycle",
        {"event": "UPDATE", "table": "jobs", "schema": "public"},
        {"event": "DELETE", "table": "jobs", "schema": "public"},
    )  # fmt: skip
    job_id = await insert_job(db, "t")
    await db.execute("update public.jobs set status = 'cancelled' where id = $1", job_id)
    await db.execute("delete from public.jobs where id = $1", job_id)

    update = (await feed.next_change())["data"]
    delete = (await feed.next_change())["data"]

    assert update["type"] == "UPDATE" and update["record"]["status"] == "cancelled"
    assert update["old_record"] == {"id": job_id}
    assert delete["type"] == "DELETE" and delete["old_record"] == {"id": job_id}
    assert "record" not in delete and delete["errors"] is None
    await sb.realtime.close()


async def test_star_binding_receives_every_event_type_in_commit_order(
    devstack, db: asyncpg.Connection
) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "all", {"event": "*", "table": "jobs", "schema": "public"})
    job_id = await insert_job(db, "t")
    await db.execute("update public.jobs set priority = 3 where id = $1", job_id)
    await db.execute("delete from public.jobs where id = $1", job_id)

    types = [(await feed.next_change())["data"]["type"] for _ in range(3)]

    assert types == ["INSERT", "UPDATE", "DELETE"]
    await sb.realtime.close()


async def test_event_binding_ignores_other_event_types(devstack, db: asyncpg.Connection) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "deletes", {"event": "DELETE", "table": "jobs", "schema": "public"})
    job_id = await insert_job(db, "t")
    await db.execute("update public.jobs set priority = 3 where id = $1", job_id)
    await db.execute("delete from public.jobs where id = $1", job_id)

    assert (await feed.next_change())["data"]["type"] == "DELETE"
    await sb.realtime.close()


@pytest.mark.parametrize(
    ("filter_", "matching", "other"),
    [
        ("priority=eq.5", 5, 4),
        ("priority=neq.5", 4, 5),
        ("priority=lt.5", 4, 5),
        ("priority=lte.5", 5, 6),
        ("priority=gt.5", 6, 5),
        ("priority=gte.5", 5, 4),
        ("priority=in.(1,5,9)", 9, 4),
    ],
)
async def test_filter_delivers_only_matching_rows(
    devstack, db: asyncpg.Connection, filter_, matching, other
) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(
        sb, "filtered", {"event": "INSERT", "table": "jobs", "schema": "public", "filter": filter_}
    )
    await insert_job(db, "skipped", priority=other)
    await insert_job(db, "wanted", priority=matching)

    record = (await feed.next_change())["data"]["record"]

    assert (record["job_type"], record["priority"]) == ("wanted", matching)
    await sb.realtime.close()


async def test_current_grammar_ands_conditions_and_negates(devstack, db: asyncpg.Connection) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    filter_ = 'job_type=like.img%,priority=not.in.(1,2),job_type=neq."img,x"'
    feed = await subscribe(
        sb, "grammar", {"event": "INSERT", "table": "jobs", "schema": "public", "filter": filter_}
    )
    await insert_job(db, "img-a", priority=1)
    await insert_job(db, "doc", priority=5)
    await insert_job(db, "img,x", priority=5)
    await insert_job(db, "img-b", priority=5)

    assert (await feed.next_change())["data"]["record"]["job_type"] == "img-b"
    await sb.realtime.close()


async def test_filter_compares_in_the_column_type_and_null_never_matches(
    devstack, db: asyncpg.Connection
) -> None:
    owner = str(uuid.uuid4())
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(
        sb, "typed",
        {"event": "INSERT", "table": "jobs", "schema": "public", "filter": f"user_id=eq.{owner.upper()}"},
        {"event": "INSERT", "table": "jobs", "schema": "public", "filter": f"user_id=neq.{owner}"},
    )  # fmt: skip
    await insert_job(db, "no owner")  # NULL: neither eq nor neq matches
    await insert_job(db, "owned", user_id=owner)

    payload = await feed.next_change()

    assert payload["data"]["record"]["job_type"] == "owned"
    assert payload["ids"] == [feed.channel.postgres_changes_callbacks[0].id]
    await sb.realtime.close()


async def test_two_bindings_on_one_row_share_one_push_with_both_ids(devstack, db: asyncpg.Connection) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(
        sb, "both",
        {"event": "*", "table": "jobs", "schema": "public"},
        {"event": "INSERT", "table": "jobs", "schema": "public", "filter": "priority=gt.1"},
    )  # fmt: skip
    await insert_job(db, "t", priority=2)

    first = await feed.next_change()
    second = await feed.next_change()  # the client calls each matching callback

    ids = {cb.id for cb in feed.channel.postgres_changes_callbacks}
    assert first == second and set(first["ids"]) == ids and len(ids) == 2
    await sb.realtime.close()


async def test_change_committed_after_subscribed_arrives_and_rolled_back_one_never(
    devstack, db: asyncpg.Connection
) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "commits", {"event": "INSERT", "table": "jobs", "schema": "public"})
    tx = db.transaction()
    await tx.start()
    await insert_job(db, "rolled back")
    await tx.rollback()
    async with db.transaction():
        await insert_job(db, "committed 1")
        await insert_job(db, "committed 2")

    received = [(await feed.next_change())["data"]["record"]["job_type"] for _ in range(2)]

    assert received == ["committed 1", "committed 2"]
    await sb.realtime.close()


async def test_user_token_sees_only_that_users_rows(devstack, db: asyncpg.Connection) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    sb = await client(devstack.url, devstack.keys.anon, user_token=devstack.keys.user_token(alice))
    feed = await subscribe(sb, "mine", {"event": "*", "table": "jobs", "schema": "public"})
    bob_job = await insert_job(db, "bob's", user_id=bob)
    await db.execute("update public.jobs set priority = 1 where id = $1", bob_job)
    await insert_job(db, "nobody's")
    alice_job = await insert_job(db, "alice's", user_id=alice)

    data = (await feed.next_change())["data"]

    assert (data["type"], data["record"]["id"]) == ("INSERT", alice_job)
    await sb.realtime.close()


async def test_anon_key_sees_no_rows_of_a_table_it_may_not_select(devstack, db: asyncpg.Connection) -> None:
    service = await client(devstack.url, devstack.keys.service_role)
    witness = await subscribe(service, "witness", {"event": "INSERT", "table": "jobs", "schema": "public"})
    anon = await client(devstack.url, devstack.keys.anon)
    feed = await subscribe(anon, "anon", {"event": "INSERT", "table": "jobs", "schema": "public"})
    await insert_job(db, "hidden")
    await witness.next_change()
    # The anon role lacks SELECT on the primary key: Realtime sends an "Error 401" row whose null
    # commit_timestamp the Python client drops, so nothing reaches the callback.
    await db.execute("create table public.open_notes (id int primary key, body text)")
    await db.execute("alter publication supabase_realtime add table public.open_notes")
    notes = await subscribe(anon, "notes", {"event": "INSERT", "table": "open_notes", "schema": "public"})
    await db.execute("insert into public.open_notes values (1, 'visible')")

    assert (await notes.next_change())["data"]["record"] == {"id": 1, "body": "visible"}
    assert feed.changes.empty()
    await service.realtime.close()
    await anon.realtime.close()


async def test_columns_are_limited_to_those_the_role_may_select(devstack, db: asyncpg.Connection) -> None:
    await db.execute("create table public.profiles (id int primary key, name text, secret text)")
    await db.execute("revoke select on public.profiles from authenticated")
    await db.execute("grant select (id, name) on public.profiles to authenticated")
    await db.execute("alter publication supabase_realtime add table public.profiles")
    user = devstack.keys.user_token(str(uuid.uuid4()))
    sb = await client(devstack.url, devstack.keys.anon, user_token=user)
    feed = await subscribe(sb, "profiles", {"event": "INSERT", "table": "profiles", "schema": "public"})
    await db.execute("insert into public.profiles values (1, 'ada', 'hunter2')")

    data = (await feed.next_change())["data"]

    assert data["columns"] == [{"name": "id", "type": "int4"}, {"name": "name", "type": "text"}]
    assert data["record"] == {"id": 1, "name": "ada"}
    await sb.realtime.close()


async def test_row_over_one_mebibyte_arrives_with_413_and_only_small_fields(
    devstack, db: asyncpg.Connection
) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "big", {"event": "INSERT", "table": "jobs", "schema": "public"})
    # Within the 1 MiB every payload is held to (as Postgres stores it), yet over 1 MiB as JSON text.
    job_id = await insert_job(db, "huge", payload={"blob": "\n" * 600_000})

    data = (await feed.next_change())["data"]

    assert data["errors"] == ["Error 413: Payload Too Large"]
    assert data["record"]["id"] == job_id and data["record"]["job_type"] == "huge"
    assert "payload" not in data["record"]
    await sb.realtime.close()


async def test_row_larger_than_a_notification_arrives_whole(devstack, db: asyncpg.Connection) -> None:
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "medium", {"event": "INSERT", "table": "jobs", "schema": "public"})
    await insert_job(db, "medium", payload={"blob": "y" * 20_000})
    await insert_job(db, "small")

    first = (await feed.next_change())["data"]
    second = (await feed.next_change())["data"]

    assert first["errors"] is None and first["record"]["payload"] == {"blob": "y" * 20_000}
    assert second["record"]["job_type"] == "small"
    assert await db.fetchval("select count(*) from _realtime.big_changes") == 0
    await sb.realtime.close()


async def test_table_outside_the_publication_gets_realtimes_system_error(
    devstack, db: asyncpg.Connection
) -> None:
    await db.execute("create table public.private_notes (id int primary key)")
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(
        sb, "nope", {"event": "*", "table": "private_notes", "schema": "public"}, live=False
    )

    state, error = await feed.next_state()

    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    payload = json.loads(str(error))
    assert (payload["status"], payload["extension"]) == ("error", "postgres_changes")
    assert payload["message"] == (
        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for "
        "the given connect parameters: "
        "[event: *, schema: public, table: private_notes, filters: [], select: nil]"
    )
    await sb.realtime.close()


async def test_table_added_to_the_publication_later_is_captured_on_join(
    devstack, db: asyncpg.Connection
) -> None:
    await db.execute("create table public.late (id int primary key, note text)")
    await db.execute("alter publication supabase_realtime add table public.late")
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "late", {"event": "INSERT", "table": "late", "schema": "public"})
    await db.execute("insert into public.late values (1, 'hi')")

    assert (await feed.next_change())["data"]["record"] == {"id": 1, "note": "hi"}
    await sb.realtime.close()


async def test_writes_by_api_roles_pass_through_the_capture_trigger(devstack, db: asyncpg.Connection) -> None:
    alice = str(uuid.uuid4())
    sb = await client(devstack.url, devstack.keys.service_role)
    feed = await subscribe(sb, "roles", {"event": "INSERT", "table": "jobs", "schema": "public"})
    await db.execute("select reactor.allow_insert('jobs', 'from the frontend')")
    async with db.transaction():
        await db.execute("select set_config('role', 'authenticated', true)")
        await db.execute("select set_config('request.jwt.claims', $1, true)", f'{{"sub": "{alice}"}}')
        await db.execute("insert into public.jobs (job_type) values ('from the frontend')")

    record = (await feed.next_change())["data"]["record"]

    assert (record["job_type"], record["user_id"]) == ("from the frontend", alice)
    await sb.realtime.close()
