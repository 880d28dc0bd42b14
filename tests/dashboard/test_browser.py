"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright,
against the local stack with real `reactor run` workers. The operator retries one failed job,
retries all failed jobs of a type through the confirmation, cancels a pending job and deletes a
failed one; the database is checked after each, and the pages are seen updating without a reload.
The screenshots in docs/dashboard/ are taken here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Page, expect

from tests.dashboard.apps import BROKEN_FLAG
from tests.dashboard.support import action_log, chromium, dashboard
from tests.support.worker import insert, row, status_is, worker_env, worker_process

pytestmark = pytest.mark.anyio

APP = "tests.dashboard.apps:app"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"
LIVE = 10_000  # ms: a page updates well within this without a reload


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


async def test_operator_retries_cancels_and_deletes_with_live_pages(
    stack, db: asyncpg.Connection, tmp_path
) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    env = worker_env(stack, **{BROKEN_FLAG: str(flag)})
    async with (
        worker_process({**env, "REACTOR_WORKER_ID": "worker-a"}, APP),
        worker_process({**env, "REACTOR_WORKER_ID": "worker-b"}, APP),
    ):
        charges = [await insert(db, "charge", {"order": n}) for n in range(1, 6)]
        reports = [await insert(db, "report", {"month": m}) for m in ("2030-01", "2030-02")]
        for job_id in charges + reports:
            await status_is(db, job_id, "failed", timeout=30)
        later = await insert(db, "charge", {"order": 99}, run_at=datetime.now(UTC) + timedelta(hours=1))
        flag.unlink()  # the outage is over: what is retried now succeeds

        async with action_log() as actions, dashboard(stack) as dash, chromium() as browser:
            overview = await browser.new_page(viewport={"width": 1280, "height": 900})
            await overview.goto(dash.url + "/")
            failed_count = overview.locator('[data-table="jobs"] [data-count="failed"]')
            await expect(failed_count).to_have_text("7")

            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(dash.url + "/failed")
            await expect(page.locator("tr[data-job]")).to_have_count(7)
            await expect(page.locator(f'tr[data-job="{charges[0]}"]')).to_contain_text(
                "card processor refused order 1"
            )
            await shot(page, "failed")

            # Retry one: the job's page shows it run to completion, live.
            await page.locator(f'tr[data-job="{charges[0]}"] button.retry').click()
            await expect(page.locator(".message")).to_have_text("Retried 1 job(s).")
            await expect(page.locator("[data-status]")).to_have_text("completed", timeout=LIVE)
            done = await row(db, charges[0])
            assert (done["status"], done["attempts"], json.loads(done["result"])) == (
                "completed",
                1,
                {"charged": 1},
            )

            # Retry all that match, through the confirmation.
            await page.goto(dash.url + "/failed?type=charge")
            await expect(page.locator("tr[data-job]")).to_have_count(4)
            await page.locator("#retry-all").click()
            await expect(page.locator("h1")).to_have_text("Retry 4 failed job(s)?")
            await shot(page, "confirm")
            await page.locator("#confirm").click()
            await expect(page.locator(".message")).to_have_text("Retried 4 job(s).")
            for job_id in charges[1:]:
                assert (await status_is(db, job_id, "completed"))["attempts"] == 1
            assert {(await row(db, r))["status"] for r in reports} == {"failed"}  # not of that type

            # Cancel a pending job from its page.
            await page.goto(f"{dash.url}/jobs/jobs/{later}")
            await page.locator("#cancel").click()
            await expect(page.locator(".message")).to_have_text("Cancelled 1 job(s).")
            await expect(page.locator("[data-status]")).to_have_text("cancelled")
            assert (await row(db, later))["status"] == "cancelled"

            # Delete a failed job, after the browser's confirmation.
            await page.goto(f"{dash.url}/jobs/jobs/{reports[0]}")
            page.once("dialog", lambda dialog: dialog.accept())
            await page.locator("#delete").click()
            await expect(page.locator(".message")).to_have_text("Deleted 1 job(s).")
            assert await row(db, reports[0]) is None

            # The overview followed all of it without a reload: one failed job left.
            await expect(failed_count).to_have_text("1", timeout=LIVE)

            # A running job's page: progress live over Realtime, then its outcome.
            render = await insert(db, "render", {"seconds": 3})
            await status_is(db, render, "processing")
            await page.goto(f"{dash.url}/jobs/jobs/{render}")
            await expect(page.locator("[data-mode]")).to_have_attribute("data-mode", "realtime", timeout=LIVE)
            await expect(page.locator(".timeline")).to_contain_text("50 % · rendering frames")
            await expect(overview.locator("tr[data-worker]")).to_have_count(1, timeout=LIVE)
            await expect(overview.locator('tr[data-type="render"]')).to_be_visible()
            await shot(page, "job")
            await shot(overview, "overview")
            await expect(page.locator("[data-status]")).to_have_text("completed", timeout=LIVE)
            await expect(page.locator("pre").first).to_contain_text('"frames": 240')

    who = "127.0.0.1 (loopback)"
    assert [(a["who"], a["action"], a.get("ids")) for a in actions] == [
        (who, "retry", [charges[0]]),
        (who, "retry all matching", None),
        (who, "cancel", [later]),
        (who, "delete", [reports[0]]),
    ]
    assert actions[1]["count"] == 4 and actions[1]["filter"] == "of type charge"
