"""The contract the tests' databases are built from: the migrations, or a schema file named by
REACTOR_TEST_SCHEMA_FILE.

Unset (always, outside mutation runs), the template database gets reactor's migrations, as
`reactor migrate` applies them. Set to the path of a schema file, the template gets that file
pasted first, as a new project pastes `reactor sql`, and then the migrations, of which it records
all it holds, so normally none run. tests/mutation/sql_guards.py sets it to a mutant of
sql/schema.sql, one at a time, to learn whether the contract tests notice.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from reactor import migrations

SCHEMA_FILE_VARIABLE = "REACTOR_TEST_SCHEMA_FILE"


def schema_file() -> Path | None:
    value = os.environ.get(SCHEMA_FILE_VARIABLE)
    return Path(value) if value else None


def schema_under_test() -> str:
    """The text of the schema file under test: REACTOR_TEST_SCHEMA_FILE's, else sql/schema.sql."""
    path = schema_file()
    return path.read_text() if path is not None else migrations.schema_script()


async def build(url: str) -> None:
    """Give a bootstrapped database the contract under test."""
    path = schema_file()
    if path is not None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(path.read_text())
        finally:
            await conn.close()
    await migrations.apply(url)
