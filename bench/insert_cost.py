"""What the hand-off trigger (sql/migrations/0007) adds to an insert into a job table.

Three cases, taken in turns for three rounds, medians reported: the trigger with no worker
standing by, the trigger with a standby whose slots are spent (it is looked at, and passed
over), and no trigger at all. Each case times one 20,000-row `insert ... select` and 2,000
one-row inserts over one asyncpg connection.

    python bench/insert_cost.py [--database-url URL]

Without --database-url it uses REACTOR_TEST_DATABASE_URL, else an embedded Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import asyncpg

from reactor import migrations
from reactor.devstack import database

CASES = ("trigger, no standby", "trigger, standby with no slots", "no trigger")
NAME = "reactor_bench_insert_cost"


async def one_case(db: asyncpg.Connection, case: str) -> tuple[float, float]:
    await db.execute("delete from reactor.standby; delete from public.jobs")
    await db.execute("select reactor.create_hand_off_trigger('jobs')")
    if case == "no trigger":
        await db.execute("drop trigger zz_reactor_hand_off on public.jobs")
    elif case == "trigger, standby with no slots":
        await db.execute(
            "insert into reactor.standby values ('jobs', 'w', array['noop'], 0, now() + interval '1 hour')"
        )
    await db.execute("vacuum analyze public.jobs")
    start = time.perf_counter()
    await db.execute("insert into public.jobs (job_type) select 'noop' from generate_series(1, 20000)")
    bulk = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(2000):
        await db.execute("insert into public.jobs (job_type) values ('noop')")
    return bulk, (time.perf_counter() - start) / 2000


async def main(server_url: str) -> None:
    url = await database.create_database(server_url, NAME)
    try:
        await database.bootstrap(url)
        await migrations.apply(url)
        db = await asyncpg.connect(url)
        try:
            results: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
            for _ in range(3):
                for case in CASES:
                    results[case].append(await one_case(db, case))
        finally:
            await db.close()
    finally:
        await database.drop_database(server_url, NAME)
    print("| case | 20,000-row insert, ms | one-row insert, µs |\n|---|---:|---:|")
    for case, runs in results.items():
        bulk = statistics.median(r[0] for r in runs) * 1000
        single = statistics.median(r[1] for r in runs) * 1e6
        print(f"| {case} | {bulk:.0f} | {single:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="a Postgres server to use; the bench makes its own database")
    with database.server(parser.parse_args().database_url) as server:
        asyncio.run(main(server))
