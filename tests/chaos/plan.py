"""What a chaos run does, drawn from one seed: the faults in order, and each job's handler time.

The same seed gives the same faults, targets, gaps and job durations. The interleaving of real
processes still varies from run to run; the seed reproduces the pressure, not every instant.

A hosted plan (the stack on the hosted profile) draws one more kind of fault, a breach of
Realtime's message quota, and marks about 3 jobs in a hundred as oversized: its payload's JSON is
over Realtime's 1 MiB record limit, so its change arrives as a 413 record without the payload.
A local plan draws exactly what it drew before hosted plans existed, so old seeds replay.
"""

from __future__ import annotations

import os
import random
import secrets
from dataclasses import dataclass, replace

WORKERS = 4
FAULT_KINDS = ("kill_worker", "freeze_worker", "close_sockets", "silence_feed", "rest_503", "restart_gateway")
# and in hosted plans only: "quota_breach"
FAULT_GAP = (2.0, 5.0)  # seconds between one fault and the next
SILENCE_SECONDS = 20.0
REST_503_SECONDS = 5.0
# A frozen worker (SIGSTOP) outlives its leases, then wakes (SIGCONT) with reports to send for
# jobs that have new owners: the late report that fencing tokens exist to refuse.
FREEZE_SECONDS = 14.0

# Hosted plans only. A quota breach counts QUOTA_BREACH_FACTOR times the plan's
# messages_per_second more messages for QUOTA_BREACH_SECONDS: 120 seconds' worth of the quota,
# twice what puts the average of the full 60 s window over it, so a gateway restart in the middle
# (the stack counts a breach's messages at its 5 s ticks, and those due when it stops are lost)
# still leaves enough. The limit triggers once 10 to 15 s of the breach have been counted and
# releases when the window holds less than that, about a minute later; meanwhile every
# postgres_changes event of the project is dropped. Breaches are drawn rarely, at least
# QUOTA_SPACING apart so the feed works between them, and not in the last QUOTA_TAIL seconds, so
# each is in force before the jobs run out; a plan that drew none gets one in the middle.
QUOTA_CHANCE = 0.05
QUOTA_BREACH_FACTOR = 4
QUOTA_BREACH_SECONDS = 30.0
QUOTA_SPACING = 90.0
QUOTA_TAIL = 30.0
# An oversized payload holds OVERSIZED_CHARS control characters, each written as a six-byte
# \u00XX escape in JSON: about 1.14 MB as JSON text, which Realtime measures (apply_rls:
# octet_length(wal::text)), but about 190 kB as jsonb, which the job tables bound to 1 MiB.
OVERSIZED_FRACTION = 0.03
OVERSIZED_CHARS = 190_000
_SIX_BYTE_ESCAPES = [chr(c) for c in range(1, 32) if chr(c) not in "\b\t\n\f\r"]


@dataclass(frozen=True)
class Fault:
    gap: float  # seconds after the previous fault
    kind: str
    worker: int  # the slot a kill_worker or freeze_worker fault hits
    close_code: int  # how a close_sockets fault ends the sockets: 1006 aborts TCP, 1011 closes


@dataclass(frozen=True)
class Plan:
    seed: int
    faults: list[Fault]
    durations: list[float]  # each job's handler time in seconds, in insertion order
    oversized: frozenset[int] = frozenset()  # insertion indexes of jobs with an oversized payload


def seed_from_environment() -> int:
    """CHAOS_SEED when given (to replay a run), else a fresh one."""
    raw = os.environ.get("CHAOS_SEED")
    return int(raw) if raw else secrets.randbelow(10**9)


def draw(seed: int, jobs: int, fault_seconds: float, *, hosted: bool = False) -> Plan:
    rng = random.Random(seed)
    faults: list[Fault] = []
    at: list[float] = []  # each fault's time from the start
    elapsed = 0.0
    last_breach = -QUOTA_SPACING
    while True:
        gap = rng.uniform(*FAULT_GAP)
        elapsed += gap
        if elapsed > fault_seconds:
            break
        if (
            hosted
            and rng.random() < QUOTA_CHANCE
            and elapsed - last_breach >= QUOTA_SPACING
            and elapsed <= fault_seconds - QUOTA_TAIL
        ):
            kind, last_breach = "quota_breach", elapsed
        else:
            kind = rng.choice(FAULT_KINDS)
        faults.append(Fault(gap, kind, rng.randrange(WORKERS), rng.choice((1006, 1011))))
        at.append(elapsed)
    if hosted and faults and last_breach < 0:
        middle = min(fault_seconds / 2, fault_seconds - QUOTA_TAIL)
        last = max((i for i in range(len(faults)) if at[i] <= middle), default=0)
        faults[last] = replace(faults[last], kind="quota_breach")
    # Mostly short jobs, and one in ten long enough to be caught by a kill or to need heartbeats
    # through a REST outage.
    durations = [rng.uniform(1.0, 6.0) if rng.random() < 0.1 else rng.uniform(0.0, 0.5) for _ in range(jobs)]
    oversized = (
        frozenset(i for i in range(jobs) if rng.random() < OVERSIZED_FRACTION) if hosted else frozenset()
    )
    return Plan(seed, faults, durations, oversized)


def oversized_pad(seed: int) -> str:
    """The filler of an oversized payload: the same for every such job of a run."""
    return "".join(random.Random(seed).choices(_SIX_BYTE_ESCAPES, k=OVERSIZED_CHARS))
