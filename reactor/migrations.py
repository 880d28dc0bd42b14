"""The database contract: `sql/schema.sql` as it stands today, `sql/migrations/` to get there.

`schema_script()` is the whole contract for a new project (`reactor sql`); it records every
migration it holds. The migrations bring a project with an earlier version up to date: list them,
print them as one script (`reactor sql --upgrade`), apply them. Each migration is idempotent and
records its own version as its last statement, so applying the set again, or pasting either script
into the Supabase SQL editor twice, changes nothing.

PostgREST keeps its schema cache until it is told to reload it: a function created after the last
reload answers PGRST202 ("Could not find the function ... in the schema cache"). So both scripts
end with `NOTIFY pgrst, 'reload schema'`, and `apply` sends it after it changed anything.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

_PACKAGE = Path(__file__).resolve().parent
# Inside a wheel the sql directory ships as reactor/sql; in a source checkout it sits beside reactor/.
_CANDIDATES = (_PACKAGE / "sql", _PACKAGE.parent / "sql")

_LOCK = "select pg_advisory_xact_lock(hashtext('reactor.migrations'))"
_APPLIED = "select version from reactor.schema_migrations"
RELOAD_SCHEMA_CACHE = "notify pgrst, 'reload schema';"
_RELOAD = (
    f"\n-- PostgREST serves the new functions once its schema cache is reloaded.\n{RELOAD_SCHEMA_CACHE}\n"
)


def sql_dir() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("reactor's sql/migrations directory is missing from this installation")


def migrations_dir() -> Path:
    return sql_dir() / "migrations"


def migration_files() -> list[Path]:
    return sorted(migrations_dir().glob("[0-9][0-9][0-9][0-9]_*.sql"))


def schema_script() -> str:
    """The whole contract as it stands today, for a new project: sql/schema.sql."""
    return (sql_dir() / "schema.sql").read_text() + _RELOAD


def script() -> str:
    """Every migration, in order, as one script for the SQL editor or supabase/migrations/."""
    parts = ["-- reactor: every migration, to upgrade a project with an earlier version; safe to rerun.\n"]
    for path in migration_files():
        parts.append(f"\n-- ==== {path.name} ====\n\n{path.read_text()}")
    return "".join(parts) + _RELOAD


async def applied_versions(conn: asyncpg.Connection) -> set[str]:
    exists = await conn.fetchval("select to_regclass('reactor.schema_migrations') is not null")
    if not exists:
        return set()
    return {row["version"] for row in await conn.fetch(_APPLIED)}


async def apply(database_url: str) -> list[str]:
    """Apply the migrations not yet recorded; return the versions applied by this call."""
    conn = await asyncpg.connect(database_url)
    done: list[str] = []
    try:
        for path in migration_files():
            async with conn.transaction():
                await conn.execute(_LOCK)
                if path.stem in await applied_versions(conn):
                    continue
                await conn.execute(path.read_text())
                done.append(path.stem)
        if done:
            await conn.execute(RELOAD_SCHEMA_CACHE)
    finally:
        await conn.close()
    return done
