import uuid
from collections.abc import Callable

import asyncpg
import pytest

from reactor import migrations
from reactor.devstack import database

pytestmark = pytest.mark.anyio


async def test_applying_migrations_twice_is_a_no_op(database_url: str, db: asyncpg.Connection):
    before = await db.fetch("select version, applied_at from reactor.schema_migrations order by 1")
    assert [r["version"] for r in before] == [p.stem for p in migrations.migration_files()]
    assert await migrations.apply(database_url) == []
    after = await db.fetch("select version, applied_at from reactor.schema_migrations order by 1")
    assert after == before


@pytest.mark.parametrize("script", [migrations.schema_script, migrations.script], ids=["fresh", "upgrade"])
async def test_the_printed_script_can_be_pasted_twice(server_url: str, script: Callable[[], str]):
    name = f"reactor_script_twice_{uuid.uuid4().hex[:12]}"
    url = await database.create_database(server_url, name)
    try:
        await database.bootstrap(url)
        conn = await asyncpg.connect(url)
        try:
            ledger = "select version, applied_at from reactor.schema_migrations order by 1"
            await conn.execute(script())
            first = await conn.fetch(ledger)
            assert [r["version"] for r in first] == [p.stem for p in migrations.migration_files()]
            await conn.execute(script())
            assert await conn.fetch(ledger) == first
            assert await migrations.apply(url) == []
            assert await conn.fetchval("select count(*) from reactor.job_tables") == 1
            job_id = await conn.fetchval("insert into public.jobs (job_type) values ('paste') returning id")
            claimed = await conn.fetch("select id from public.reactor_claim('jobs', 'w1', array['paste'])")
            assert [r["id"] for r in claimed] == [job_id]
        finally:
            await conn.close()
    finally:
        await database.drop_database(server_url, name)


async def test_migrations_need_no_superuser(server_url: str):
    """As on Supabase, where `postgres` owns the database and the publication but is no superuser."""
    owner = "reactor_nonsuper_owner"
    admin = await asyncpg.connect(server_url)
    try:
        if not await admin.fetchval("select 1 from pg_roles where rolname = $1", owner):
            await admin.execute(f"create role {owner} login nosuperuser")
        url = await database.create_database(server_url, "reactor_nonsuper")
        await database.bootstrap(url)
        setup = await asyncpg.connect(url)
        try:
            for grant in ("database reactor_nonsuper", "schema public", "publication supabase_realtime"):
                await setup.execute(f"alter {grant} owner to {owner}")
            await setup.execute(f"grant usage on schema auth to {owner}")
        finally:
            await setup.close()
        owner_url = database.with_database(url, "reactor_nonsuper", user=owner)
        conn = await asyncpg.connect(owner_url)
        try:
            assert await conn.fetchval("select current_user") == owner
            assert not await conn.fetchval("select rolsuper from pg_roles where rolname = current_user")
        finally:
            await conn.close()
        assert len(await migrations.apply(owner_url)) == len(migrations.migration_files())
    finally:
        await database.drop_database(server_url, "reactor_nonsuper")
        await admin.close()
