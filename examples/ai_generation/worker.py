"""AI generation: three job types against an OpenAI-compatible API, paid for in credits.

Credits are taken in SQL (`consume_credits` in schema.sql) before the API is called: one
statement checks and takes them, so two jobs can never spend the same credit, and a retried job
is never charged twice. A user without enough credits gets a permanent failure that says so, and
the API is never called for that job. The user charged is the job's owner (`job.user_id`, set by
the database to whoever inserted the row), never a name in the payload, which is the user's to
write. A frontend, signed in, inserts:

    insert into jobs (job_type, payload) values ('sentiment_analysis',
      '{"text": "Great service, slow delivery."}');
"""

from __future__ import annotations

import os

import httpx
from postgrest.exceptions import APIError

from examples.supabase_api import supabase
from reactor import Job, PermanentError, Reactor

OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8703/v1")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "local-fake")
MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

# job type: (credits it costs, the instruction given to the model)
TASKS = {
    "ai_generation": (5, "Write the requested text."),
    "review_processing": (2, "Summarise this customer review in one sentence."),
    "sentiment_analysis": (1, "Answer positive, negative or mixed for the sentiment of this text."),
}

app = Reactor()


async def charge(job: Job, amount: int) -> int:
    client = await supabase()
    if job.user_id is None:
        raise PermanentError("the job has no owner to charge: insert it as a signed-in user")
    args = {"p_user_id": job.user_id, "p_amount": amount, "p_job_id": job.id}
    try:
        return (await client.rpc("consume_credits", args).execute()).data
    except APIError as exc:
        if "insufficient credits" in (exc.message or ""):
            raise PermanentError(exc.message) from None
        raise


async def complete(instruction: str, text: str) -> str:
    async with httpx.AsyncClient(base_url=OPENAI_BASE_URL, timeout=60) as client:
        response = await client.post(
            "/chat/completions",
            headers={"Authorization": f"Bearer {OPENAI_API_KEY}"},
            json={
                "model": MODEL,
                "messages": [{"role": "system", "content": instruction}, {"role": "user", "content": text}],
            },
        )
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]


def handler(job_type: str) -> None:
    cost, instruction = TASKS[job_type]

    @app.handler(job_type, timeout=120, max_attempts=3)
    async def run(job: Job) -> dict:
        balance = await charge(job, cost)
        await job.set_progress(20, f"charged {cost} credits")
        output = await complete(instruction, job.payload["text"])
        return {"output": output, "credits_charged": cost, "balance": balance}


for name in TASKS:
    handler(name)
