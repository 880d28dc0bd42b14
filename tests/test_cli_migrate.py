import subprocess
import sys

import asyncpg
import pytest

from reactor import migrations
from reactor.devstack import database

pytestmark = pytest.mark.anyio


def reactor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reactor.cli", *args], capture_output=True, text=True)


async def test_reactor_migrate_applies_once_then_reports_up_to_date(server_url: str):
    url = await database.create_database(server_url, "reactor_cli_migrate")
    try:
        await database.bootstrap(url)
        listener = await asyncpg.connect(url)
        reloads: list[str] = []
        await listener.add_listener("pgrst", lambda *args: reloads.append(args[3]))
        first = reactor("migrate", "--database-url", url)
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("applied 0001_reactor_schema")
        await listener.fetchval("select 1")  # notifications are read with the next message
        # One from the database's DDL event triggers per migration (Postgres sends a transaction's
        # identical notifications once), and one from `reactor migrate` after them all.
        assert reloads == ["reload schema"] * (len(migrations.migration_files()) + 1)
        second = reactor("migrate", "--database-url", url)
        assert (second.returncode, second.stdout.strip()) == (0, "already up to date")
        await listener.fetchval("select 1")
        assert len(reloads) == len(migrations.migration_files()) + 1  # nothing changed, nothing to reload
        await listener.close()
    finally:
        await database.drop_database(server_url, "reactor_cli_migrate")


@pytest.mark.parametrize("args", [(), ("--upgrade",)])
def test_both_scripts_end_by_reloading_the_apis_schema_cache(args: tuple[str, ...]):
    printed = reactor("sql", *args)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.rstrip().endswith("notify pgrst, 'reload schema';")


def test_reactor_migrate_names_an_unreachable_database():
    result = reactor("migrate", "--database-url", "postgresql://postgres@127.0.0.1:9/postgres")
    assert result.returncode == 1
    assert result.stderr.startswith("reactor migrate: cannot reach the database")
    assert "Traceback" not in result.stderr


def test_reactor_migrate_names_a_malformed_url():
    result = reactor("migrate", "--database-url", "not a url")
    assert result.returncode == 1
    assert "reactor migrate:" in result.stderr and "Traceback" not in result.stderr
