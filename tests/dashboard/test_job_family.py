"""A job's page shows its parent, its children and its log lines, escaped, and offers to cancel a
job that waits for its children (sql/migrations/0015, 0016)."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.dashboard.support import dashboard
from tests.support.contract import claim, leases, rpc
from tests.support.worker import insert, row

pytestmark = pytest.mark.anyio


async def test_a_parents_page_lists_its_children_and_lines_and_cancels_it_with_them(
    stack, db: asyncpg.Connection
) -> None:
    parent_id = await insert(db, "quote_all")
    [parent] = await claim(db, ["quote_all"])
    lines = [
        {**leases([parent])[0], "level": "info", "message": "asking 2 lenders"},
        {**leases([parent])[0], "level": "warning", "message": "<b>lender 3 is down</b>"},
    ]
    await rpc(db, "reactor_log", p_table="jobs", p_lines=lines)
    children = [{"job_type": "quote", "key": "24 months"}, {"job_type": "quote", "key": "36 months"}]
    ids = (
        await rpc(
            db,
            "reactor_spawn",
            p_table="jobs",
            p_parent=parent_id,
            p_lease_token=str(parent["lease_token"]),
            p_children=children,
        )
    )["ids"]
    await rpc(db, "reactor_wait", p_table="jobs", p_jobs=leases([parent]))
    async with dashboard(stack) as dash, httpx.AsyncClient(base_url=dash.url) as client:
        page = (await client.get(f"/jobs/jobs/{parent_id}")).text
        assert 'data-status="waiting"' in page
        assert [f'data-child="{i}"' in page for i in ids] == [True, True]
        assert "24 months" in page and "36 months" in page
        assert page.count("data-log-line") == 2 and "asking 2 lenders" in page
        assert "&lt;b&gt;lender 3 is down&lt;/b&gt;" in page
        child_page = (await client.get(f"/jobs/jobs/{ids[0]}")).text
        assert f'href="/jobs/jobs/{parent_id}"' in child_page
        done = await client.post(f"/jobs/jobs/{parent_id}/cancel", headers={"Origin": dash.url})
        assert done.status_code == 303
    assert [(await row(db, i))["status"] for i in (parent_id, *ids)] == ["cancelled"] * 3


async def test_the_overview_shows_limits_with_their_use_and_schedules_with_their_next_run(
    stack, db: asyncpg.Connection
) -> None:
    await db.execute(
        "select public.reactor_set_limits('jobs', 'render', '{\"concurrency\": 4, \"rate\": 10, \"per_seconds\": 60}')"
    )
    await db.execute("select public.reactor_set_limits('jobs', 'thumbnail', '{\"paused\": true}')")
    await insert(db, "render")
    await claim(db, ["render"])
    await db.execute(
        "select reactor.schedule('nightly', '17 3 * * *', 'jobs', 'prune_exports', p_time_zone => 'Europe/Berlin')"
    )
    async with dashboard(stack) as dash, httpx.AsyncClient(base_url=dash.url) as client:
        page = (await client.get("/")).text
    render = page.split('data-limit="render"', 1)[1].split("</tr>", 1)[0]
    assert "<td>1</td><td>4</td>" in render and "1 of 10 in 60 s" in render
    assert "data-paused" in page.split('data-limit="thumbnail"', 1)[1].split("</tr>", 1)[0]
    nightly = page.split('data-schedule="nightly"', 1)[1].split("</tr>", 1)[0]
    assert "17 3 * * *" in nightly and "Europe/Berlin" in nightly and "prune_exports" in nightly
    assert "UTC" in nightly and "overdue" not in nightly and "never" in nightly


async def test_the_overview_lists_idle_workers_standing_by(stack, db: asyncpg.Connection) -> None:
    await db.execute(
        "select * from public.reactor_claim('jobs', 'idle-worker-1', array['echo', 'render'], 10, 60, 30)"
    )
    async with dashboard(stack) as dash, httpx.AsyncClient(base_url=dash.url) as client:
        page = (await client.get("/")).text
    row = page.split('data-standby="idle-worker-1"', 1)[1].split("</tr>", 1)[0]
    assert "<td>10</td><td>echo, render</td>" in row
