"""`Reactor`: the application object a user builds, registers handlers on, and runs.

Shutdown order matters: stop claiming first (a claim cut off mid-call would strand jobs until
their lease expires), let running jobs finish within the grace period, cancel the rest and hand
them back with reactor_release so they keep their attempt, then send the outcomes still queued,
and only then stop the heartbeats that kept all those leases alive.
"""

from __future__ import annotations

import importlib
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup
from loguru import logger

from reactor import config as config_module
from reactor import log
from reactor.config import Config, ConfigError
from reactor.dispatcher import Dispatcher
from reactor.handlers import Handler, HandlerFunction, Registry
from reactor.health import Health
from reactor.lease_keeper import LeaseKeeper
from reactor.listener import Listener
from reactor.metrics import Metrics
from reactor.poller import Poller
from reactor.redact import Redactor
from reactor.reporter import Reporter
from reactor.retry import RetryPolicy
from reactor.running import RunningJobs
from reactor.store import Store, StoreError
from reactor.ticker import Ticker

# At shutdown, the longest outcomes wait to be recorded after the grace period: a platform's stop
# timeout must cover REACTOR_GRACE_SECONDS plus this (docs/deploy.md).
OUTCOME_GIVE_UP_SECONDS = 10.0


class Reactor:
    """A worker: `@app.handler("type")` registers handlers, `app.run()` works until SIGTERM."""

    def __init__(self, **overrides: Any) -> None:
        config_module.check_options(overrides)
        self._overrides = overrides
        self._specs: list[dict[str, Any]] = []
        self._stop_requested: Callable[[], None] | None = None
        self._stop_early = False
        self.dispatcher: Dispatcher | None = None
        self.store: Store | None = None
        self.listener: Listener | None = None
        self.poller: Poller | None = None
        self._health: Health | None = None
        self.metrics = Metrics()

    def handler(
        self,
        job_type: str,
        *,
        timeout: float | None = None,
        max_attempts: int | None = None,
        table: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        def register(function: HandlerFunction) -> HandlerFunction:
            spec = {
                "job_type": job_type,
                "function": function,
                "table": table,
                "timeout": timeout,
                "max_attempts": max_attempts,
                "retry": retry,
            }
            Registry().add(Handler(**{**spec, "table": table or "jobs"}))  # validate at decoration time
            self._specs.append(spec)
            return function

        return register

    def load_config(self, env: dict[str, str] | None = None) -> Config:
        return config_module.load(env, **self._overrides)

    def registry(self, default_table: str) -> Registry:
        """The handlers, each serving its own table or else `default_table`."""
        registry = Registry()
        for spec in self._specs:
            registry.add(Handler(**{**spec, "table": spec["table"] or default_table}))
        return registry

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; the exit code for the process."""
        try:
            config = self.load_config()
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"reactor: {problem}", file=sys.stderr)
            return 2
        log.setup(config.log_format, config.log_level, config.redacted())
        if not self._specs:
            logger.error("no handlers registered: decorate functions with @app.handler('job_type')")
            return 2
        try:
            self.registry(config.table)
        except ValueError as exc:  # two handlers for one job type, once tables are known
            logger.error(str(exc))
            return 2
        anyio.run(self.serve, config, True)
        return 0

    @property
    def health_port(self) -> int | None:
        """The port /healthz, /readyz and /metrics are served on, once running."""
        return self._health.port if self._health else None

    def stop(self) -> None:
        """Begin a graceful shutdown, as SIGTERM does."""
        if self._stop_requested is None:
            self._stop_early = True
        else:
            self._stop_requested()

    async def serve(self, config: Config, handle_signals: bool = False) -> None:
        registry = self.registry(config.table)
        store = Store(config.supabase_url, config.service_key)
        redactor = Redactor(config.redacted())
        give_up = min(config.lease_seconds / 2, OUTCOME_GIVE_UP_SECONDS)
        reporter = Reporter(store, give_up_seconds=give_up, redactor=redactor)
        running = RunningJobs()
        leases = LeaseKeeper(store, running, reporter.leases, config.lease_seconds)
        # Ticks also reap and log statistics, so they come at least as often as either is asked for.
        chores = min(config.reap_seconds, config.stats_seconds)
        fast, slow = min(config.poll_fast_seconds, chores), min(config.poll_slow_seconds, chores)
        # An idle worker renews its standby with every tick; it lapses after two missed ones.
        standby_seconds = min(3600, math.ceil(2 * slow) + 5) if config.realtime and config.hand_off else 0
        poller_ref: list[Poller] = []
        ticker = Ticker(
            store,
            config.worker_id,
            config.lease_seconds,
            config.stats_seconds,
            lambda table, seconds: poller_ref[0].due_in(table, seconds),
        )
        dispatcher = Dispatcher(
            config,
            store,
            registry,
            reporter,
            self.metrics,
            ticker,
            lambda table, at: poller_ref[0].schedule(table, at),
            redactor,
            running,
            leases.confirm,
            standby_seconds,
        )
        listener = self._listener(config, registry, dispatcher, poller_ref) if config.realtime else None
        ticker.probe = listener
        healthy = listener.healthy if listener else lambda: False
        poller = Poller(dispatcher.wake, dispatcher.tick, fast, slow, healthy)
        poller_ref.append(poller)
        if listener is not None and config.hand_off:
            dispatcher.standing_by = listener.feed_live
        self.listener, self.poller = listener, poller
        self.dispatcher, self.store = dispatcher, store
        logger.bind(worker_id=config.worker_id).info(
            f"worker starting: tables {registry.tables()}, concurrency {config.concurrency}, "
            f"lease {config.lease_seconds} s"
        )
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(reporter.run)
                keeper = anyio.CancelScope()
                outer.start_soon(self._keep_leases, keeper, leases)
                if handle_signals:
                    outer.start_soon(self._watch_signals)
                await self._work(config, dispatcher, poller, listener)
                await self._release(store, dispatcher)
                await ticker.remove_probes()
                reporter.close()
                await reporter.drained()
                keeper.cancel()
                outer.cancel_scope.cancel()
        finally:
            self._stop_requested, self._stop_early = None, False
            await store.aclose()
        logger.bind(worker_id=config.worker_id).info("worker stopped")

    def _listener(
        self,
        config: Config,
        registry: Registry,
        dispatcher: Dispatcher,
        poller_ref: list[Poller],
    ) -> Listener:
        return Listener(
            config.supabase_url,
            config.service_key,
            {table: registry.job_types(table) for table in registry.tables()},
            config.worker_id,
            wake=dispatcher.wake,
            schedule=lambda table, at: poller_ref[0].schedule(table, at),
            health_changed=lambda: poller_ref[0].health_changed(),
            tick_now=lambda: poller_ref[0].tick_now(),
            probe_seconds=config.probe_seconds,
            handed=dispatcher.take,
            hand_off_seen=lambda lease_ends: poller_ref[0].hand_off_seen(lease_ends),
        )

    async def _work(
        self,
        config: Config,
        dispatcher: Dispatcher,
        poller: Poller,
        listener: Listener | None,
    ) -> None:
        async with anyio.create_task_group() as jobs:
            async with anyio.create_task_group() as services:
                self._stop_requested = lambda: self._begin_shutdown(services, dispatcher)
                jobs.start_soon(dispatcher.run, jobs)
                services.start_soon(poller.run)
                if listener is not None:
                    services.start_soon(listener.run)
                if config.health_port is not None:
                    await services.start(self.health(dispatcher, poller, listener).serve, config.health_port)
                if self._stop_early:
                    self.stop()
            with anyio.move_on_after(config.grace_seconds):
                await dispatcher.drained()
            dispatcher.running.release_all()

    def health(self, dispatcher: Dispatcher, poller: Poller, listener: Listener | None) -> Health:
        def ready() -> dict[str, Any]:
            return {
                "ready": dispatcher.api_ok and dispatcher.claiming,
                "api": "reachable" if dispatcher.api_ok else "unreachable",
                "realtime": listener.state if listener else "off",
                "polling_seconds": poller.interval(),
            }

        def metrics() -> str:
            realtime = listener.state if listener else "off"
            return self.metrics.render(dispatcher.store_calls(), len(dispatcher.running), realtime)

        self._health = Health(ready, metrics)
        return self._health

    def _begin_shutdown(self, services: TaskGroup, dispatcher: Dispatcher) -> None:
        logger.info("shutting down: no new jobs; waiting for running jobs")
        self._stop_requested = _exit_now
        dispatcher.stop_claiming()
        services.cancel_scope.cancel()

    async def _keep_leases(self, scope: anyio.CancelScope, keeper: LeaseKeeper) -> None:
        with scope:
            await keeper.run()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logger.info(f"received {signal.Signals(signum).name}")
                self.stop()

    async def _release(self, store: Store, dispatcher: Dispatcher) -> None:
        for table, leases in dispatcher.to_release.items():
            try:
                answer = await store.release(table, leases)
            except StoreError as exc:
                logger.error(f"could not hand back {len(leases)} jobs in {table}; the reaper will: {exc}")
                continue
            logger.info(f"handed back {len(answer.get('released', []))} unfinished jobs in {table}")


def _exit_now() -> None:
    logger.warning("second signal: exiting at once; the reaper will hand back running jobs")
    os._exit(1)


def load_app(spec: str) -> Reactor:
    """The `Reactor` named by an import string such as `myproject.worker:app`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise TypeError(f"expected module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn does: the project directory is importable
    app = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(app, Reactor):
        raise TypeError(f"{spec} is a {type(app).__name__}, not a reactor.Reactor")
    return app
