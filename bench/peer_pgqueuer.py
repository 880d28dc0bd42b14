"""pgqueuer's side of bench/peers.py: its schema, enqueueing, and a worker process.

    python bench/peer_pgqueuer.py DATABASE_URL STAMPS COUNTS

The worker runs one `noop` entrypoint that appends "job id, time.time()" to STAMPS, with
pgqueuer's LISTEN/NOTIFY pickup and a batch size of 1,000 (its knob for throughput, set like reactor's claim
batch; at 100 it drained 20,000 jobs about 5 % slower on this machine), and writes how
many times it has called pgqueuer's dequeue query to COUNTS every half second.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import asyncpg
from pgqueuer import QueueManager
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence.queries import Queries

BATCH = 1000


async def install(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


async def enqueue(conn: asyncpg.Connection, n: int) -> list[int]:
    """Enqueue n no-op jobs in one statement; their ids."""
    return list(await Queries(AsyncpgDriver(conn)).enqueue(["noop"] * n, [None] * n, [0] * n))


async def remaining(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("select count(*) from pgqueuer")


async def work(url: str, stamps: Path, counts: Path) -> None:
    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    dequeues = 0
    original = qm.queries.dequeue

    async def counted(*args, **kwargs):
        nonlocal dequeues
        dequeues += 1
        return await original(*args, **kwargs)

    qm.queries.dequeue = counted
    out = stamps.open("a", buffering=1)

    @qm.entrypoint("noop")
    async def noop(job) -> None:
        out.write(f"{job.id},{time.time()}\n")

    async def report() -> None:
        while True:
            counts.write_text(str(dequeues))
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(report())
    try:
        await qm.run(batch_size=BATCH)
    finally:
        reporter.cancel()
        counts.write_text(str(dequeues))


if __name__ == "__main__":
    asyncio.run(work(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
