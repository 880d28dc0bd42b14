"""`Reactor`: the application object a user builds, registers handlers on, and runs.

It holds what the user declares (handlers, options) and what the process needs (configuration,
logging, signals); the worker itself, its parts and their order, is `Worker` (worker.py).
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import anyio
from loguru import logger

from reactor import config as config_module
from reactor import handlers, log
from reactor.config import Config, ConfigError
from reactor.executor import Middleware
from reactor.handlers import Handler, HandlerFunction, Registry
from reactor.health import Health
from reactor.hooks import Hook, HookFunction
from reactor.metrics import Metrics
from reactor.retry import RetryPolicy
from reactor.schedules import DEFAULT_CATCH_UP_SECONDS, Schedule
from reactor.store import JobStore, Store
from reactor.worker import Worker


class Reactor:
    """A worker: `@app.handler("type")` registers handlers, `@app.cron("* * * * *")` schedules
    them, `@app.middleware` wraps every handler call, `@app.on_finished()` runs after outcomes are
    recorded, `app.run()` works until SIGTERM."""

    def __init__(self, **overrides: Any) -> None:
        config_module.check_options(overrides)
        self._overrides = overrides
        self._specs: list[dict[str, Any]] = []
        self._crons: list[tuple[HandlerFunction, dict[str, Any]]] = []
        self.middlewares: list[Middleware] = []  # in registration order, the first outermost
        self.hooks: list[Hook] = []
        self._stop_requested: Callable[[], None] | None = None
        self._stop_early = False
        self.worker: Worker | None = None  # the last one served, for tests and the REPL
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
        concurrency: int | None = None,
        rate: str | None = None,
        per_user: int | None = None,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Register a handler for `job_type`. `concurrency`, `rate` ("2/s", "100/m") and `per_user`
        are limits across every worker, held by the database (README, "Limits across the fleet"):
        they apply when the job type has none set yet, and an operator's setting wins."""

        def register(function: HandlerFunction) -> HandlerFunction:
            spec = {
                "job_type": job_type,
                "function": function,
                "table": table,
                "timeout": timeout,
                "max_attempts": max_attempts,
                "retry": retry,
                "limits": handlers.limits(concurrency, rate, per_user),
            }
            Registry().add(Handler(**{**spec, "table": table or "jobs"}))  # validate at decoration time
            self._specs.append(spec)
            return function

        return register

    def cron(
        self,
        cron: str,
        *,
        name: str | None = None,
        payload: Any = None,
        time_zone: str = "UTC",
        catch_up: int = DEFAULT_CATCH_UP_SECONDS,
        priority: int = 0,
        max_attempts: int | None = None,
    ) -> Callable[[HandlerFunction], HandlerFunction]:
        """Enqueue a job for the handler this decorates (with `@app.handler`, above or below) at
        every time of `cron` (five fields, or six with seconds first) in `time_zone`, once per time
        however many workers run. Times missed while no worker ran are enqueued once each when one
        is back within `catch_up` seconds; older ones are skipped. `name` (default: the job type)
        names the schedule in the database, unique in the project."""

        def register(function: HandlerFunction) -> HandlerFunction:
            options = {
                "name": name,
                "cron": cron,
                "payload": {} if payload is None else payload,
                "time_zone": time_zone,
                "catch_up": catch_up,
                "priority": priority,
                "max_attempts": max_attempts,
            }
            # Checked at decoration time, under the name it will most likely have.
            Schedule(**{**options, "name": name or function.__name__, "job_type": "check", "max_attempts": 5})
            self._crons.append((function, options))
            return function

        return register

    def middleware(self, function: Middleware) -> Middleware:
        """Register `async def middleware(job, call_next)` to run around every handler call:
        `return await call_next(job)` runs the next middleware, then the handler, and gives its
        result. Middleware runs in registration order, the first registered outermost, inside the
        handler's timeout; whatever it raises or returns counts as the handler's."""
        if not callable(function):
            raise TypeError(f"@app.middleware takes an async function (job, call_next), not {function!r}")
        self.middlewares.append(function)
        return function

    def on_finished(
        self,
        job_type: str | None = None,
        *,
        retries: int = 3,
        timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
    ) -> Callable[[HookFunction], HookFunction]:
        """Register `async def hook(job, finished)` to run after the outcome of a job of
        `job_type` (None: any) is recorded as completed, failed for good or cancelled; never for a
        retried attempt, a snooze or a wait. A hook that raises or outlives `timeout` seconds is
        tried again up to `retries` times with backoff (`retry`, default 1 s doubling to 60 s),
        then logged. At most once per outcome per worker process (README, "Completion hooks")."""
        if callable(job_type):
            raise TypeError("write @app.on_finished() or @app.on_finished('job_type'), with parentheses")

        def register(function: HookFunction) -> HookFunction:
            options: dict[str, Any] = {"retries": retries, "timeout": timeout}
            if retry is not None:
                options["retry"] = retry
            self.hooks.append(Hook(function, job_type, **options))
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

    def schedules(self, default_table: str) -> list[Schedule]:
        """The schedules `@app.cron` declared, each for its handler's job type and table."""
        found: dict[str, Schedule] = {}
        for function, options in self._crons:
            spec = next((s for s in self._specs if s["function"] is function), None)
            if spec is None:
                raise ValueError(
                    f"@app.cron({options['cron']!r}) on {function.__name__}: it is not a handler; "
                    "decorate it with @app.handler too"
                )
            schedule = Schedule(
                **{
                    **options,
                    "name": options["name"] or spec["job_type"],
                    "job_type": spec["job_type"],
                    "table": spec["table"] or default_table,
                    "max_attempts": options["max_attempts"] or spec["max_attempts"] or 5,
                }
            )
            if schedule.name in found:
                raise ValueError(f"two schedules are named {schedule.name!r}: give each its own name=")
            found[schedule.name] = schedule
        return list(found.values())

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
            self.schedules(config.table)
        except ValueError as exc:  # two handlers for one job type, once tables are known; a bad cron
            logger.error(str(exc))
            return 2
        # What is built by now (reactor, the app and its handlers, the clients' modules) lives as long
        # as the process: frozen out of the cyclic garbage collector's passes, which would otherwise
        # scan it all again and again while thousands of jobs run.
        gc.freeze()
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

    async def serve(
        self, config: Config, handle_signals: bool = False, store: JobStore | None = None
    ) -> None:
        """Work until `stop()` (or a signal, with `handle_signals`), over the API or, for tests, over
        `store` (reactor.memory.MemoryStore)."""
        store = store or Store(config.supabase_url, config.service_key)
        worker = Worker(
            config,
            self.registry(config.table),
            self.metrics,
            store,
            self.schedules(config.table),
            self.middlewares,
            self.hooks,
        )
        self.worker = worker
        self._health = worker.health
        logger.bind(worker_id=config.worker_id).info(
            f"worker starting: tables {worker.tables}, concurrency {config.concurrency}, "
            f"lease {config.lease_seconds} s"
        )
        try:
            async with anyio.create_task_group() as signals:
                if handle_signals:
                    signals.start_soon(self._watch_signals)
                await worker.run(started=lambda: self._started(worker))
                signals.cancel_scope.cancel()
        finally:
            self._stop_requested, self._stop_early = None, False
            await store.aclose()
        logger.bind(worker_id=config.worker_id).info("worker stopped")

    def _started(self, worker: Worker) -> None:
        self._stop_requested = lambda: self._begin_shutdown(worker)
        if self._stop_early:
            self.stop()

    def _begin_shutdown(self, worker: Worker) -> None:
        logger.info("shutting down: no new jobs; waiting for running jobs")
        self._stop_requested = _exit_now
        worker.stop()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logger.info(f"received {signal.Signals(signum).name}")
                self.stop()


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
