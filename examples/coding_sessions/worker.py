"""Coding sessions: one job runs one coding session; paying plans go first.

The job's priority comes from the session's plan (Pro 10, Starter 5, Free 0), set by a trigger
as the job is inserted (schema.sql), so a frontend cannot buy priority by writing the column.
Sessions belong to users: the trigger reads the plan only of a session the job's owner holds, and
the handler works only on such a session (`job.user_id` is the owner; the payload is the user's
to write, so a session id in it proves nothing). A session that fails three attempts is
dead-lettered (`failed`), and a second trigger marks the session failed too, whichever way the
job died. A frontend, signed in, inserts:

    insert into jobs (job_type, payload)
    values ('coding_session', '{"session_id": "…", "task": "fix the tests"}');
"""

from __future__ import annotations

import anyio

from examples.supabase_api import supabase
from reactor import Job, PermanentError, Reactor

app = Reactor()


async def set_status(session_id: str, status: str) -> None:
    client = await supabase()
    await client.table("example_sessions").update({"status": status}).eq("id", session_id).execute()


async def owns(user_id: str | None, session_id: str) -> bool:
    if user_id is None:
        return False
    client = await supabase()
    sessions = client.table("example_sessions").select("id")
    found = await sessions.eq("id", session_id).eq("user_id", user_id).execute()
    return bool(found.data)


@app.handler("coding_session", timeout=900, max_attempts=3)
async def coding_session(job: Job) -> dict:
    session_id, task = job.payload["session_id"], job.payload["task"]
    if not await owns(job.user_id, session_id):
        raise PermanentError(f"session {session_id} is not one of the job owner's sessions")
    await set_status(session_id, "running")
    await job.set_progress(10, f"attempt {job.attempt}: starting the sandbox")
    if task == "crash the sandbox":  # stands in for a session that can never succeed
        raise RuntimeError("the sandbox exited with status 137")
    await anyio.sleep(0.05)  # stands in for the agent's work
    await set_status(session_id, "done")
    return {"session_id": session_id, "task": task, "summary": f"done: {task}"}
