"""Helpers for the dashboard's tests: the dashboard in the test's event loop, its action log, and a
headless Chromium from the system's packages driven by Playwright."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from loguru import logger

from reactor.dashboard.server import Dashboard
from reactor.dashboard.settings import Settings

if TYPE_CHECKING:
    from playwright.async_api import Browser

    from reactor.devstack.stack import Stack


@asynccontextmanager
async def dashboard(stack: Stack, **settings: Any) -> AsyncIterator[Dashboard]:
    options = {"tables": ("jobs",), "port": 0, "refresh_seconds": 0.5, **settings}
    running = Dashboard(Settings(stack.url, stack.keys.service_role, **options))
    async with anyio.create_task_group() as group:
        await group.start(running.serve)
        try:
            yield running
        finally:
            group.cancel_scope.cancel()


@asynccontextmanager
async def action_log() -> AsyncIterator[list[dict[str, Any]]]:
    """The dashboard's action records, as the JSON log writes their fields."""
    records: list[dict[str, Any]] = []

    def sink(message: Any) -> None:
        extra = message.record["extra"]
        if extra.get("event") == "dashboard_action":
            records.append(json.loads(json.dumps(extra, default=str)))

    sink_id = logger.add(sink, level="INFO")
    try:
        yield records
    finally:
        logger.remove(sink_id)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: apt-get install chromium (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()
