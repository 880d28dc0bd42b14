"""supabase-js from npm, under Node 22, against the local stack: realtime-js over the V2
serializer and postgrest-js, in one subscribe, insert, select round trip.

npm installs supabase-js and a Node 22 binary (the `node` package) into a cache directory outside
the repository, keyed by js/package.json, so later runs reuse it. Without npm or the registry the
tests fail, saying why: the README's frontend claim must not go unchecked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.anyio


async def test_supabase_js_subscribe_insert_select_round_trip(devstack, js_dir: Path) -> None:
    job_type = f"js-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "SUPABASE_URL": devstack.url,
        "SUPABASE_SERVICE_ROLE_KEY": devstack.keys.service_role,
        "JOB_TYPE": job_type,
    }
    node = js_dir / "node_modules" / ".bin" / "node"
    proc = await asyncio.create_subprocess_exec(
        str(node), "roundtrip.mjs", cwd=js_dir, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()

    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["vsn"] == "2.0.0" and "SUBSCRIBED" in seen["statuses"]
    assert seen["system"]["status"] == "ok" and seen["system"]["extension"] == "postgres_changes"
    [inserted] = seen["inserted"]
    change = seen["change"]
    assert (change["schema"], change["table"], change["eventType"]) == ("public", "jobs", "INSERT")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", change["commit_timestamp"])
    assert change["new"]["id"] == inserted["id"] == seen["selected"]["id"]
    assert change["new"]["job_type"] == seen["selected"]["job_type"] == job_type
    assert change["new"]["payload"] == seen["selected"]["payload"] == {"from": "js"}
    assert change["old"] == {} and change["errors"] is None
