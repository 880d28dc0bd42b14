"""The local stack's Postgres: a server given by URL or an embedded one, bootstrapped as Supabase.

An embedded server comes from the `pgserver` wheel (a real PostgreSQL binary, no Docker) and keeps
its data directory between runs. Every database this module hands out has Supabase's roles,
`auth` helpers and `supabase_realtime` publication (see supabase.sql).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def bootstrap_sql() -> str:
    """supabase.sql, then Realtime's own schema (realtime/messages.sql), which a Supabase project
    has from the start."""
    return (
        files("reactor.devstack").joinpath("supabase.sql").read_text()
        + "\n"
        + files("reactor.devstack.realtime").joinpath("messages.sql").read_text()
    )


@contextlib.contextmanager
def embedded(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) an embedded PostgreSQL in `data_dir`; yield its superuser URL."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """The Postgres server at `url`, or else a throwaway embedded one, deleted afterwards."""
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="reactor-pg-") as tmp, embedded(Path(tmp) / "data") as started:
        yield started


def with_database(url: str, name: str, user: str | None = None) -> str:
    """The same server URL pointing at another database (and, if given, as another user)."""
    parts = urlsplit(url)
    if user is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}@{host}")
    return urlunsplit(parts._replace(path="/" + name))


async def bootstrap(url: str) -> None:
    """Give the database at `url` what a Supabase project's database has. Idempotent."""
    conn = await asyncpg.connect(url)
    try:
        # Roles are cluster-wide: serialize concurrent bootstraps of databases on one server.
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock(hashtext('reactor.devstack.bootstrap'))")
            await conn.execute(bootstrap_sql())
    finally:
        await conn.close()


async def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database `name` (dropping any old one of that name); return its URL."""
    if not _NAME.match(name) or (template is not None and not _NAME.match(template)):
        raise ValueError(f"invalid database name {name!r}")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
        clause = f' template "{template}"' if template else ""
        await conn.execute(f'create database "{name}"{clause}')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()
