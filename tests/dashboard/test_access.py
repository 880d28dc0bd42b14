"""Who may use the dashboard and what reaches the browser: loopback by default, a token off it,
requests from other sites refused, the service key never sent, user-written values escaped; and a
job's page kept live by polling while Realtime is refused."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from tests.dashboard.support import action_log, dashboard
from tests.support.worker import insert, row

pytestmark = pytest.mark.anyio

SECRET = "alice-secret-0123456789"
LATER = datetime(2100, 1, 1, tzinfo=UTC)


def test_off_loopback_without_a_token_it_refuses_to_start_with_one_line() -> None:
    env = {"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "key", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "reactor.cli", "dashboard", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "reactor dashboard: --host 0.0.0.0 is not loopback: set REACTOR_DASHBOARD_TOKEN (name:secret, "
        "comma-separated) so that only its holders can use the dashboard\n"
    )


async def test_with_a_token_every_page_needs_it_and_actions_name_its_holder(
    stack, db: asyncpg.Connection
) -> None:
    job_id = await insert(db, "charge", {"order": 1}, status="failed")
    async with (
        action_log() as actions,
        dashboard(stack, tokens=(("alice", SECRET),)) as dash,
        httpx.AsyncClient(base_url=dash.url) as client,
    ):
        page = await client.get("/", headers={"Accept": "text/html"})
        assert (page.status_code, page.headers["location"]) == (303, "/login?next=/")
        assert (await client.get("/events/overview")).status_code == 401
        assert (await client.post(f"/jobs/jobs/{job_id}/retry")).status_code == 401
        assert (
            await client.get("/", headers={"Authorization": "Bearer wrong-secret-000000000"})
        ).status_code == 401
        assert (await client.get("/", headers={"Authorization": f"Bearer {SECRET}"})).status_code == 200

        refused = await client.post("/login", data={"token": "not-it-0000000000000", "next": "/failed"})
        assert refused.status_code == 401 and "reactor_dashboard" not in refused.cookies
        login = await client.post("/login", data={"token": SECRET, "next": "/failed"})
        assert (login.status_code, login.headers["location"]) == (303, "/failed")
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and SECRET not in cookie
        overview = await client.get("/")
        assert overview.status_code == 200 and "alice" in overview.text

        cross_site = await client.post(
            f"/jobs/jobs/{job_id}/retry", headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403
        assert (await row(db, job_id))["status"] == "failed"
        retried = await client.post(f"/jobs/jobs/{job_id}/retry", headers={"Origin": dash.url})
        assert retried.status_code == 303
        assert (await row(db, job_id))["status"] in ("pending", "processing", "completed")
    assert [(a["who"], a["action"]) for a in actions] == [
        ("127.0.0.1 (no valid token)", "login refused"),
        ("alice", "login"),
        ("alice", "retry"),
    ]


async def test_on_loopback_it_refuses_other_host_names_and_cross_site_posts(
    stack, db: asyncpg.Connection
) -> None:
    job_id = await insert(db, "charge", {"order": "<script>alert(1)</script>"}, run_at=LATER)
    async with dashboard(stack) as dash, httpx.AsyncClient(base_url=dash.url) as client:
        rebound = await client.get("/", headers={"Host": f"attacker.example:{dash.port}"})
        assert rebound.status_code == 421
        forged = await client.post(f"/jobs/jobs/{job_id}/cancel", headers={"Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403
        assert (await row(db, job_id))["status"] == "pending"

        pages = [await client.get(path) for path in ("/", "/failed", f"/jobs/jobs/{job_id}")]
        assert all(p.status_code == 200 for p in pages)
        assert all(stack.keys.service_role not in p.text for p in pages)
        job = pages[2]
        assert "<script>alert(1)</script>" not in job.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in job.text
        assert (
            "script-src" not in job.headers["Content-Security-Policy"]
        )  # default-src 'self': no inline script
        assert job.headers["X-Frame-Options"] == "DENY"


async def next_fragment(lines, timeout: float = 5.0) -> str:
    """The next `fragment` event's HTML from a server-sent event stream."""
    data: list[str] = []
    deadline = time.monotonic() + timeout
    async for line in lines:
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            return "\n".join(data)
        if time.monotonic() > deadline:
            break
    raise AssertionError("no fragment in time")


async def test_a_jobs_page_stays_live_by_polling_while_realtime_is_refused(
    stack, db: asyncpg.Connection
) -> None:
    stack.faults.refuse_websockets(60)
    job_id = await insert(db, "charge", {"order": 7}, run_at=LATER)
    async with (
        dashboard(stack) as dash,
        httpx.AsyncClient(base_url=dash.url, timeout=10) as client,
        client.stream("GET", f"/events/jobs/jobs/{job_id}") as events,
    ):
        assert events.headers["content-type"] == "text/event-stream"
        lines = events.aiter_lines()
        first = await next_fragment(lines)
        assert 'data-status="pending"' in first and 'data-mode="polling"' in first
        changed_at = time.monotonic()
        await db.execute(
            "update public.jobs set status = 'cancelled', completed_at = now() where id = $1", job_id
        )
        second = await next_fragment(lines)
        assert 'data-status="cancelled"' in second
        assert time.monotonic() - changed_at < 2.5  # polled every second while Realtime is down
