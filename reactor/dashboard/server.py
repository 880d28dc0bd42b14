"""Running the dashboard: `reactor dashboard` in the foreground, or `Dashboard` inside a caller's
event loop (the tests and the benchmark use it that way)."""

from __future__ import annotations

import argparse
import signal
import sys

import anyio
from aiohttp import web
from loguru import logger

from reactor import log
from reactor import web as web_stack
from reactor.dashboard.auth import Auth
from reactor.dashboard.live import JobWatch, Overview
from reactor.dashboard.pages import Pages
from reactor.dashboard.project import Project
from reactor.dashboard.settings import Settings, SettingsError, load
from reactor.store import Store


class Dashboard:
    def __init__(self, settings: Settings, job_poll_seconds: float = 1.0) -> None:
        self.settings = settings
        self.store = Store(settings.supabase_url, settings.service_key)
        self.project = project = Project(self.store)
        self.overview = Overview(project, settings.tables, settings.refresh_seconds)
        watch = JobWatch(project, settings.supabase_url, settings.service_key, poll_seconds=job_poll_seconds)
        self.pages = Pages(settings, project, self.overview, watch, Auth(settings))
        self.port: int | None = None

    def app(self) -> web.Application:
        return self.pages.app()

    async def serve(self, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status` gets the port."""
        sock = web_stack.listen(self.settings.host, self.settings.port)
        self.port = sock.getsockname()[1]
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self.overview.run)
                await group.start(web_stack.serve, self.app(), sock)
                task_status.started(self.port)
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.aclose()

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.port}"


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(args.host, args.port, args.table, args.refresh)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"reactor dashboard: {problem}", file=sys.stderr)
        return 2
    log.setup(settings.log_format, settings.log_level, settings.redacted())

    async def main() -> None:
        dashboard = Dashboard(settings)
        async with anyio.create_task_group() as group:
            try:
                await group.start(dashboard.serve)
            except OSError as exc:
                logger.error(f"dashboard not started: {settings.host}:{settings.port}: {exc}")
                raise SystemExit(1) from None
            logger.info(
                f"dashboard on {dashboard.url} for tables {', '.join(settings.tables)}"
                + ("" if settings.tokens else " (no login: loopback only)")
            )
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    logger.info("dashboard stopping")
                    group.cancel_scope.cancel()
                    break

    anyio.run(main)
    return 0
