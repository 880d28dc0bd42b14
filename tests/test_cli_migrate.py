import subprocess
import sys

import pytest

from reactor.devstack import database

pytestmark = pytest.mark.anyio


def reactor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reactor.cli", *args], capture_output=True, text=True)


async def test_reactor_migrate_applies_once_then_reports_up_to_date(server_url: str):
    url = await database.create_database(server_url, "reactor_cli_migrate")
    try:
        await database.bootstrap(url)
        first = reactor("migrate", "--database-url", url)
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("applied 0001_reactor_schema")
        second = reactor("migrate", "--database-url", url)
        assert (second.returncode, second.stdout.strip()) == (0, "already up to date")
    finally:
        await database.drop_database(server_url, "reactor_cli_migrate")


def test_reactor_migrate_names_an_unreachable_database():
    result = reactor("migrate", "--database-url", "postgresql://postgres@127.0.0.1:9/postgres")
    assert result.returncode == 1
    assert result.stderr.startswith("reactor migrate: cannot reach the database")
    assert "Traceback" not in result.stderr


def test_reactor_migrate_names_a_malformed_url():
    result = reactor("migrate", "--database-url", "not a url")
    assert result.returncode == 1
    assert "reactor migrate:" in result.stderr and "Traceback" not in result.stderr
