"""Fixtures: a real Postgres bootstrapped as Supabase, with a fresh database for every test.

The server is the one in REACTOR_TEST_DATABASE_URL when set, else an embedded one from the
`pgserver` wheel. A template database gets Supabase's bootstrap and reactor's migrations once per
session; each test gets its own clone, so tests are isolated and run in any order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import asyncpg
import pytest

from reactor.devstack import database
from tests.support import schema

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    with database.server(os.environ.get("REACTOR_TEST_DATABASE_URL")) as url:
        yield url


@pytest.fixture(scope="session")
def template_name(server_url: str) -> Iterator[str]:
    name = f"reactor_tmpl_{os.getpid()}"

    async def build() -> None:
        url = await database.create_database(server_url, name)
        await database.bootstrap(url)
        await schema.build(url)  # the migrations, or REACTOR_TEST_SCHEMA_FILE's (tests/support/schema.py)

    anyio.run(build)
    yield name
    anyio.run(database.drop_database, server_url, name)


@pytest.fixture
async def database_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    name = f"reactor_t_{uuid.uuid4().hex[:12]}"
    url = await database.create_database(server_url, name, template=template_name)
    yield url
    await database.drop_database(server_url, name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()
