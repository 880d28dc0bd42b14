"""`reactor dev`: the local stack, the demo worker and a few demo jobs, flowing in one terminal.

Development tooling, not the worker runtime: this is the one module outside reactor.devstack
that starts the local stack.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import asyncpg
from loguru import logger

from reactor import config as config_module
from reactor import log, migrations
from reactor.config import ConfigError
from reactor.demo import DEMO_JOBS, app
from reactor.devstack import database
from reactor.devstack.foreground import postgres
from reactor.devstack.keys import load_or_create
from reactor.devstack.stack import serve


def run(database_url: str | None, port: int, home: Path) -> int:
    home.mkdir(parents=True, exist_ok=True)
    with postgres(database_url, home) as url:
        try:
            anyio.run(_dev, url, port, home)
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"reactor dev: {problem}", file=sys.stderr)
            return 2
    return 0


async def _dev(url: str, port: int, home: Path) -> None:
    await database.bootstrap(url)
    await migrations.apply(url)
    async with serve(url, port=port, keys=load_or_create(home / "keys.json")) as stack:
        env = {**os.environ, "SUPABASE_URL": stack.url, "SUPABASE_SERVICE_ROLE_KEY": stack.keys.service_role}
        env.setdefault("REACTOR_HEALTH_PORT", "off")
        config = config_module.load(env)
        log.setup(config.log_format, config.log_level, [stack.keys.service_role])
        logger.info(f"local stack on {stack.url}; `reactor devstack` prints its keys")
        async with anyio.create_task_group() as group:
            group.start_soon(app.serve, config, True)
            await _wait_subscribed()
            await _demo_jobs(url)
            logger.info("demo jobs done; insert more rows into public.jobs to see them run. Ctrl-C stops")


async def _wait_subscribed() -> None:
    """Until Realtime says its replication is established: a job scheduled for later and inserted
    before it would wait for the slow tick, which is correct but a dull demo."""
    with anyio.move_on_after(10):
        while not _live():
            await anyio.sleep(0.05)


def _live() -> bool:
    listener = app.worker.listener if app.worker else None
    return listener is not None and listener.healthy() and app.metrics.events["realtime_live"] > 0


async def _demo_jobs(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        ids = []
        for job_type, payload, delay in DEMO_JOBS:
            run_at = datetime.now(UTC) + timedelta(seconds=delay)
            ids.append(
                await conn.fetchval(
                    "insert into public.jobs (job_type, payload, run_at) values ($1, $2::jsonb, $3)"
                    " returning id",
                    job_type,
                    json.dumps(payload),
                    run_at,
                )
            )
        logger.info(f"inserted demo jobs {ids}")
        with anyio.move_on_after(60):
            while await conn.fetchval(
                "select count(*) from public.jobs where id = any($1) and status in ('pending', 'processing')",
                ids,
            ):
                await anyio.sleep(0.2)
        for row in await conn.fetch(
            "select id, job_type, status, attempts, result from public.jobs where id = any($1) order by id",
            ids,
        ):
            logger.info(
                f"job {row['id']} {row['job_type']}: {row['status']} after {row['attempts']} "
                f"attempt(s), result {row['result']}"
            )
    finally:
        await conn.close()
