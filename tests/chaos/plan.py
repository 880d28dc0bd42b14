"""What a chaos run does, drawn from one seed: the faults in order, and each job's handler time.

The same seed gives the same faults, targets, gaps and job durations. The interleaving of real
processes still varies from run to run; the seed reproduces the pressure, not every instant.
"""

from __future__ import annotations

import os
import random
import secrets
from dataclasses import dataclass

WORKERS = 4
FAULT_KINDS = ("kill_worker", "freeze_worker", "close_sockets", "silence_feed", "rest_503", "restart_gateway")
FAULT_GAP = (2.0, 5.0)  # seconds between one fault and the next
SILENCE_SECONDS = 20.0
REST_503_SECONDS = 5.0
# A frozen worker (SIGSTOP) outlives its leases, then wakes (SIGCONT) with reports to send for
# jobs that have new owners: the late report that fencing tokens exist to refuse.
FREEZE_SECONDS = 14.0


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


def seed_from_environment() -> int:
    """CHAOS_SEED when given (to replay a run), else a fresh one."""
    raw = os.environ.get("CHAOS_SEED")
    return int(raw) if raw else secrets.randbelow(10**9)


def draw(seed: int, jobs: int, fault_seconds: float) -> Plan:
    rng = random.Random(seed)
    faults: list[Fault] = []
    elapsed = 0.0
    while True:
        gap = rng.uniform(*FAULT_GAP)
        elapsed += gap
        if elapsed > fault_seconds:
            break
        faults.append(Fault(gap, rng.choice(FAULT_KINDS), rng.randrange(WORKERS), rng.choice((1006, 1011))))
    # Mostly short jobs, and one in ten long enough to be caught by a kill or to need heartbeats
    # through a REST outage.
    durations = [rng.uniform(1.0, 6.0) if rng.random() < 0.1 else rng.uniform(0.0, 0.5) for _ in range(jobs)]
    return Plan(seed, faults, durations)
