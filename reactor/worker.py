"""`Worker`: builds the worker's parts, each given what it needs, and runs and stops them in order.

The parts are built in dependency order, so nothing is patched in afterwards: the feed's state
(feed.py) and the claim wake-ups (wakeups.py) first, since the listener writes them and the
poller, ticker and dispatcher read them; then the poller (timers), the ticker, the runner and the
dispatcher; the listener last, since it hands the dispatcher what Realtime brings. The scheduler
stands apart: it needs only the store, and enqueues jobs the others then find as any insert.

Shutdown order matters: stop claiming first (a claim cut off mid-call would strand jobs until
their lease expires), let running jobs finish within the grace period, cancel the rest and hand
them back with reactor_release so they keep their attempt, then send the outcomes still queued,
and only then stop the heartbeats that kept all those leases alive. Completion hooks run beside
all this on their own tasks; once the last outcome is recorded they get what is left of the grace
period (counted from the stop), and those still queued or running then are logged as not run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from loguru import logger

from reactor.config import Config
from reactor.dispatcher import Dispatcher
from reactor.executor import Middleware
from reactor.feed import Feed
from reactor.handlers import Registry
from reactor.health import Health
from reactor.hooks import Hook, Hooks
from reactor.lease_keeper import LeaseKeeper
from reactor.listener import Listener
from reactor.metrics import Metrics
from reactor.poller import Poller
from reactor.redact import Redactor
from reactor.reporter import Reporter
from reactor.retry import RetryPolicy
from reactor.runner import JobRunner
from reactor.running import RunningJobs
from reactor.scheduler import Scheduler
from reactor.schedules import Schedule
from reactor.standby import Standby
from reactor.store import JobStore, StoreError
from reactor.ticker import Ticker
from reactor.wakeups import Wakeups

# At shutdown, the longest outcomes wait to be recorded after the grace period: a platform's stop
# timeout must cover REACTOR_GRACE_SECONDS plus this (docs/deploy.md).
OUTCOME_GIVE_UP_SECONDS = 10.0


class Worker:
    def __init__(
        self,
        config: Config,
        registry: Registry,
        metrics: Metrics,
        store: JobStore,
        schedules: Sequence[Schedule] = (),
        middleware: Sequence[Middleware] = (),
        hooks: Sequence[Hook] = (),
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.tables = tables = registry.tables()
        give_up = min(config.lease_seconds / 2, OUTCOME_GIVE_UP_SECONDS)
        redactor = Redactor(config.redacted())  # errors and progress messages go to rows owners read
        self.wakeups = Wakeups(tables)
        # Hooks run on their own tasks, as many at once as jobs may run; with none, nothing is told.
        self.hooks = Hooks(hooks, redactor, config.concurrency)
        recorded = self.hooks.recorded if self.hooks else None
        self.reporter = Reporter(
            store, give_up_seconds=give_up, redactor=redactor, wake=self.wakeups.wake, recorded=recorded
        )
        self.running = RunningJobs()
        self.leases = LeaseKeeper(store, self.running, self.reporter.leases, config.lease_seconds)
        self.feed = Feed(config.realtime)
        # Ticks also reap and log statistics, so they come at least as often as either is asked for.
        chores = min(config.reap_seconds, config.stats_seconds)
        fast, slow = min(config.poll_fast_seconds, chores), min(config.poll_slow_seconds, chores)
        self.poller = Poller(
            self.wakeups.wake, self.wakeups.tick, fast, slow, self.feed.dependable, metrics.events
        )
        ticker = Ticker(
            store,
            config.worker_id,
            config.lease_seconds,
            config.stats_seconds,
            self.poller.due_in,
            self.feed if config.realtime else None,
            metrics.events,
            metrics.limits,
        )
        # An idle worker renews its standby with every tick; it lapses after two missed ones.
        hand_offs = config.realtime and config.hand_off
        standby = Standby(
            store, config.worker_id, min(3600, math.ceil(2 * slow) + 5) if hand_offs else 0, self.feed
        )
        policy = RetryPolicy(
            config.retry_base_seconds, max(config.retry_cap_seconds, config.retry_base_seconds)
        )
        runner = JobRunner(
            config.worker_id,
            store,
            self.reporter,
            self.running,
            policy,
            redactor,
            metrics,
            self.poller.schedule,
            self.wakeups,
            standby,
            middleware,
            recorded,
        )
        self.dispatcher = Dispatcher(
            config.worker_id,
            config.concurrency,
            config.lease_seconds,
            store,
            registry,
            ticker,
            self.wakeups,
            standby,
            runner,
            self.running,
            self.leases.confirm,
        )
        self.listener = (
            Listener(
                config.supabase_url,
                config.service_key,
                {table: registry.job_types(table) for table in tables},
                config.worker_id,
                self.feed,
                self.wakeups.wake,
                self.poller,
                config.probe_seconds,
                self.dispatcher.take,
                metrics.events,
                lambda: store.worker_topic(config.worker_id),
                hear_all=not hand_offs,
                cancel=lambda table, job_id: self.running.lease_lost(table, job_id, cancelled=True),
            )
            if config.realtime
            else None
        )
        self.scheduler = Scheduler(
            store,
            config.worker_id,
            {table: registry.job_types(table) for table in tables},
            schedules,
            metrics.events,
        )
        self._ticker = ticker
        self.health = Health(self._ready, self._metrics)
        self._services: anyio.CancelScope | None = None

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        """Work until `stop()`, then shut down in order; `started` is called once all is running."""
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.reporter.run)
            hooks_done = anyio.Event()
            outer.start_soon(self._run_hooks, hooks_done)
            keeper = anyio.CancelScope()
            outer.start_soon(self._keep_leases, keeper)
            stopped_at = await self._work(started)
            await self._release()
            await self._ticker.remove_probes()
            self.reporter.close()
            await self.reporter.drained()
            self.hooks.close(max(stopped_at + self.config.grace_seconds, anyio.current_time()))
            await hooks_done.wait()
            keeper.cancel()
            outer.cancel_scope.cancel()

    def stop(self) -> None:
        """Stop claiming and stop the services; running jobs get the grace period."""
        self.dispatcher.stop_claiming()
        if self._services is not None:
            self._services.cancel()

    async def _work(self, started: Callable[[], None]) -> float:
        """Run until `stop()`; when that was, on anyio's clock, once running jobs are done."""
        async with anyio.create_task_group() as jobs:
            async with anyio.create_task_group() as services:
                self._services = services.cancel_scope
                jobs.start_soon(self.dispatcher.run, jobs)
                services.start_soon(self.poller.run)
                services.start_soon(self.scheduler.run)
                if self.listener is not None:
                    services.start_soon(self.listener.run)
                if self.config.health_port is not None:
                    await services.start(self.health.serve, self.config.health_port)
                started()
            stopped_at = anyio.current_time()
            with anyio.move_on_after(self.config.grace_seconds):
                await self.running.empty()
            self.running.release_all()
        return stopped_at

    async def _run_hooks(self, done: anyio.Event) -> None:
        try:
            if self.hooks:
                await self.hooks.run()
        finally:
            done.set()

    async def _keep_leases(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self.leases.run()

    async def _release(self) -> None:
        for table, leases in self.running.to_release.items():
            try:
                answer = await self.store.release(table, leases)
            except StoreError as exc:
                logger.error(f"could not hand back {len(leases)} jobs in {table}; the reaper will: {exc}")
                continue
            logger.info(f"handed back {len(answer.get('released', []))} unfinished jobs in {table}")

    def _ready(self) -> dict[str, Any]:
        dispatcher = self.dispatcher
        return {
            "ready": dispatcher.api_ok and dispatcher.claiming,
            "api": "reachable" if dispatcher.api_ok else "unreachable",
            "realtime": self.feed.state,
            "polling_seconds": self.poller.interval(),
        }

    def _metrics(self) -> str:
        return self.metrics.render(self.store.calls, len(self.running), self.feed.state)
