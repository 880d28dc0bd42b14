"""The `reactor` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import anyio

from reactor import migrations, operator
from reactor.dashboard.settings import DEFAULT_PORT


def _sql(args: argparse.Namespace) -> int:
    sys.stdout.write(migrations.script() if args.upgrade else migrations.schema_script())
    return 0


def _migrate(args: argparse.Namespace) -> int:
    try:
        applied = anyio.run(migrations.apply, args.database_url)
    except (OSError, ValueError) as exc:
        print(f"reactor migrate: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # asyncpg's errors carry the server's message
        print(f"reactor migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"applied {', '.join(applied)}" if applied else "already up to date")
    return 0


def _run(args: argparse.Namespace) -> int:
    from reactor.app import load_app

    if not args.app:
        print("reactor run: name the app as module:attribute, or set REACTOR_APP", file=sys.stderr)
        return 2
    try:
        app = load_app(args.app)
    except (ImportError, AttributeError, TypeError) as exc:
        print(f"reactor run: {exc}", file=sys.stderr)
        return 2
    return app.run()


def _dashboard(args: argparse.Namespace) -> int:
    from reactor.dashboard import server

    return server.run(args)


# What the local stack needs beyond the worker: the `devstack` extra in pyproject.toml.
_STACK_MODULES = frozenset({"jwt", "pgserver"})


def _dev(args: argparse.Namespace) -> int:
    try:
        from reactor import dev

        return dev.run(args.database_url, args.port, Path(args.home))
    except ModuleNotFoundError as exc:
        return _without_stack("dev", exc)
    except OSError as exc:
        print(f"reactor dev: {exc}", file=sys.stderr)
        return 1


def _devstack(args: argparse.Namespace) -> int:
    try:
        from reactor.devstack import foreground
        from reactor.devstack.profile import Profile, parse_setting
    except ModuleNotFoundError as exc:
        return _without_stack("devstack", exc)
    try:
        settings = dict(parse_setting(text) for text in args.set)
        if args.profile == "hosted":
            profile = Profile.hosted(args.plan, **settings)
        else:
            profile = Profile.local().with_settings(settings)
    except ValueError as exc:
        print(f"reactor devstack: {exc}", file=sys.stderr)
        return 2
    try:
        home = Path(args.home)
        return foreground.run(args.database_url, args.port, home, args.fresh, migrations.apply, profile)
    except OSError as exc:
        print(f"reactor devstack: {exc}", file=sys.stderr)
        return 1


def _without_stack(command: str, exc: ModuleNotFoundError) -> int:
    missing = (exc.name or "").partition(".")[0]
    if missing not in _STACK_MODULES:
        raise exc
    print(
        f"reactor {command}: the local stack is not installed ({missing} is missing):"
        " pip install 'reactor[devstack]'",
        file=sys.stderr,
    )
    return 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="reactor", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    sql = sub.add_parser("sql", help="print the database contract, for a new project")
    sql.add_argument(
        "--upgrade",
        action="store_true",
        help="print the migrations as one script instead, for a project with an earlier version",
    )
    sql.set_defaults(run=_sql)
    migrate = sub.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("--database-url", required=True, help="postgresql://… of the project")
    migrate.set_defaults(run=_migrate)
    run = sub.add_parser("run", help="run a worker: reactor run module:app")
    run.add_argument(
        "app",
        nargs="?",
        default=os.environ.get("REACTOR_APP"),
        help="import string of the Reactor, as module:attribute (default: $REACTOR_APP)",
    )
    run.set_defaults(run=_run)
    dev = sub.add_parser("dev", help="the local stack with a demo worker and demo jobs")
    dev.add_argument("--database-url", help="use this Postgres instead of an embedded one")
    dev.add_argument("--port", type=int, default=54321, help="0 picks a free port")
    dev.add_argument("--home", default=".devstack", help="where data and keys are kept")
    dev.set_defaults(run=_dev)
    devstack = sub.add_parser("devstack", help="run the local Supabase-compatible stack")
    devstack.add_argument("--database-url", help="use this Postgres instead of an embedded one")
    devstack.add_argument("--port", type=int, default=54321, help="0 picks a free port")
    devstack.add_argument("--home", default=".devstack", help="where data and keys are kept")
    devstack.add_argument("--fresh", action="store_true", help="delete the kept data first")
    devstack.add_argument(
        "--profile",
        choices=("local", "hosted"),
        default="local",
        help="local: fast, nothing limited; hosted: hosted Supabase's limits, timing and failures",
    )
    devstack.add_argument(
        "--plan", choices=("free", "pro", "team"), default="free", help="the hosted plan's quotas"
    )
    devstack.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override one profile setting"
    )
    devstack.set_defaults(run=_devstack)
    operator.add_commands(sub)
    dashboard = sub.add_parser("dashboard", help="the operator dashboard, a web app for a browser")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    dashboard.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    dashboard.add_argument(
        "--table", action="append", help="a job table to show; repeat for several (default REACTOR_TABLE)"
    )
    dashboard.add_argument(
        "--refresh", type=float, default=1.0, help="seconds between reads of the counts while watched"
    )
    dashboard.set_defaults(run=_dashboard)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
