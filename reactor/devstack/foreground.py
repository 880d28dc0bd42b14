"""`reactor devstack`: the local stack in the foreground until Ctrl-C or SIGTERM, data kept."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from reactor.devstack import database
from reactor.devstack.keys import load_or_create
from reactor.devstack.profile import Profile
from reactor.devstack.stack import Stack, serve

Migrate = Callable[[str], Awaitable[object]]


@contextlib.contextmanager
def postgres(database_url: str | None, home: Path) -> Iterator[str]:
    """The given Postgres, or an embedded one whose data persists under `home`."""
    if database_url:
        yield database_url
        return
    with database.embedded(home / "pgdata") as url:
        yield url


def exports(stack: Stack) -> str:
    return "\n".join(
        [
            f"export SUPABASE_URL={stack.url}",
            f"export SUPABASE_ANON_KEY={stack.keys.anon}",
            f"export SUPABASE_SERVICE_ROLE_KEY={stack.keys.service_role}",
            f"export DATABASE_URL={stack.database_url}",
        ]
    )


async def _serve_until_signal(url: str, port: int, home: Path, migrate: Migrate, profile: Profile) -> None:
    await database.bootstrap(url)
    await migrate(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(url, port=port, keys=load_or_create(home / "keys.json"), profile=profile) as stack:
        print(exports(stack), flush=True)
        print(
            f"# local stack up on {stack.url} ({profile.describe()}); Ctrl-C stops it, data kept in {home}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def run(
    database_url: str | None, port: int, home: Path, fresh: bool, migrate: Migrate, profile: Profile
) -> int:
    if fresh and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    with postgres(database_url, home) as url:
        asyncio.run(_serve_until_signal(url, port, home, migrate, profile))
    return 0
