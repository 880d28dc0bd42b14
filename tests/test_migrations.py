import asyncpg
import pytest

from reactor import migrations

pytestmark = pytest.mark.anyio


async def test_applying_migrations_twice_is_a_no_op(database_url: str, db: asyncpg.Connection):
    before = await db.fetch("select version, applied_at from reactor.schema_migrations order by 1")
    assert [r["version"] for r in before] == [p.stem for p in migrations.migration_files()]
    assert await migrations.apply(database_url) == []
    after = await db.fetch("select version, applied_at from reactor.schema_migrations order by 1")
    assert after == before
