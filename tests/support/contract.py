"""Calls to the SQL contract as the worker makes them, for the contract tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg


async def enqueue(
    db: asyncpg.Connection, job_type: str = "t", n: int = 1, table: str = "jobs", **columns: Any
) -> list[int]:
    """Insert n jobs of one type with the given column values; return their ids."""
    cols = {"job_type": job_type, **columns}
    names = ", ".join(cols)
    params = ", ".join(f"${i + 2}" for i in range(len(cols)))
    rows = await db.fetch(
        f"insert into public.{table} ({names}) select {params} from generate_series(1, $1) returning id",
        n,
        *[json.dumps(v) if isinstance(v, dict | list) else v for v in cols.values()],
    )
    return [r["id"] for r in rows]


async def claim(
    db: asyncpg.Connection,
    types: list[str],
    limit: int = 1,
    worker: str = "w1",
    lease: int = 60,
    table: str = "jobs",
) -> list[asyncpg.Record]:
    return await db.fetch(
        "select * from public.reactor_claim($1, $2, $3, $4, $5)", table, worker, types, limit, lease
    )


async def rpc(db: asyncpg.Connection, fn: str, **args: Any) -> Any:
    """Call a jsonb-returning reactor_ function with named arguments; return parsed JSON."""
    names = ", ".join(f"{name} => ${i + 1}" for i, name in enumerate(args))
    values = [json.dumps(v) if _is_json(v) else v for v in args.values()]
    value = await db.fetchval(f"select public.{fn}({names})", *values)
    return json.loads(value) if isinstance(value, str) else value


def _is_json(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and any(isinstance(x, dict | list | str) for x in value)
    )


def leases(jobs: list[asyncpg.Record], **extra: Any) -> list[dict[str, Any]]:
    return [{"id": j["id"], "lease_token": str(j["lease_token"]), **extra} for j in jobs]


async def row(db: asyncpg.Connection, job_id: int, table: str = "jobs") -> asyncpg.Record:
    return await db.fetchrow(f"select * from public.{table} where id = $1", job_id)


@contextlib.asynccontextmanager
async def acting_as(
    db: asyncpg.Connection, role: str, sub: str | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """One transaction as PostgREST runs a request: the role and JWT claims set locally."""
    claims = {"role": role} | ({"sub": sub} if sub else {})
    async with db.transaction():
        await db.execute(
            "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            role,
            json.dumps(claims),
        )
        yield db


async def stand_by(
    db: asyncpg.Connection, worker: str, slots: int, types=("t",), seconds: int = 30, table="jobs"
):
    """Claim as a worker with `slots` free slots would, offering what is left for hand-offs."""
    return await db.fetch(
        "select * from public.reactor_claim($1, $2, $3, $4, 60, $5)",
        table,
        worker,
        list(types),
        slots,
        seconds,
    )


# pg_cron is not in the local Postgres: a stand-in with the shape of its calls records what reactor
# registers, and the tests run the registered commands as pg_cron would.
PG_CRON_STAND_IN = """
create schema cron;
create table cron.job (jobid bigserial primary key, jobname text unique, schedule text, command text);
create function cron.schedule(p_name text, p_schedule text, p_command text) returns bigint
language sql as $$
  insert into cron.job (jobname, schedule, command) values (p_name, p_schedule, p_command)
  on conflict (jobname) do update set schedule = excluded.schedule, command = excluded.command
  returning jobid
$$;
create function cron.unschedule(p_name text) returns boolean
language sql as $$ with d as (delete from cron.job where jobname = p_name returning 1) select exists (select 1 from d) $$;
create function cron.unschedule(p_id bigint) returns boolean
language sql as $$ with d as (delete from cron.job where jobid = p_id returning 1) select exists (select 1 from d) $$;
"""


async def install_pg_cron_stand_in(db: asyncpg.Connection) -> None:
    await db.execute(PG_CRON_STAND_IN)


# pg_net is not in the local Postgres either: a stand-in with pg_net's signature records each
# queued request, as pg_net's net.http_request_queue would hold it.
PG_NET_STAND_IN = """
create schema net;
create table net.requests (id bigserial primary key, url text, body jsonb, params jsonb, headers jsonb,
                           timeout_milliseconds integer);
create function net.http_post(url text, body jsonb default '{}', params jsonb default '{}',
                              headers jsonb default '{"Content-Type": "application/json"}',
                              timeout_milliseconds integer default 1000) returns bigint
language sql as $$
  insert into net.requests (url, body, params, headers, timeout_milliseconds)
  values (url, body, params, headers, timeout_milliseconds) returning id
$$;
"""


async def install_pg_net_stand_in(db: asyncpg.Connection) -> None:
    await db.execute(PG_NET_STAND_IN)
