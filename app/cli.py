"""The ``contactsync`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from app.collector import tune_collector
from app.config import ConfigError, Settings

DESCRIPTION = """\
contactsync mirrors Kommo CRM contacts into Unisender and brings unsubscribes back.

Configuration comes from CONTACTSYNC_* environment variables (see README). With no
CONTACTSYNC_DATABASE_URL / CONTACTSYNC_REDIS_URL, use `demo` or `serve --embedded`: they start a
PostgreSQL and a Redis server of their own (the `embedded` extra), with data under .contactsync/,
and run the API and the worker in one process; the servers stop when it ends.
"""


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except (ConfigError, ValidationError) as exc:
        print(f"contactsync: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


@contextlib.contextmanager
def _embedded(state_dir: Path, *, fresh: bool = False, migrate: bool = True) -> Iterator[tuple[str, str]]:
    """Start the embedded PostgreSQL and Redis of ``state_dir`` (migrated to head unless ``migrate=False``)
    and yield their URLs ``(database_url, redis_url)``; stop them when the block exits, however it exits."""
    from app.db.schema import upgrade
    from app.localservers import LocalServerError, embedded_servers

    # SIGTERM and SIGHUP end the run as Ctrl-C does (a KeyboardInterrupt here; inside the event loop, the
    # API server or ``_run_cancellable`` handles them); either way this block exits and stops the servers.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    with contextlib.ExitStack() as stack:
        try:
            servers = stack.enter_context(embedded_servers(state_dir, fresh_database=fresh))
        except LocalServerError as exc:
            print(f"contactsync: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        print(
            f"contactsync: PostgreSQL on 127.0.0.1:{servers.postgres.port} (data in "
            f"{state_dir / 'postgres'}) and Redis on 127.0.0.1:{servers.redis.port}, stopped on exit",
            file=sys.stderr,
        )
        if migrate:
            upgrade(servers.database_url, "head")
        yield servers.database_url, servers.redis_url


def _run_cancellable(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)``, where SIGTERM and SIGHUP cancel ``main`` as Ctrl-C does (its ``finally``
    blocks run: API and worker stop in order). 0 when it was cancelled."""

    async def run() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
        return await main

    try:
        return asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0


@contextlib.contextmanager
def _with_database(settings: Settings) -> Iterator[Settings]:
    """``settings`` as they are when they name a database; else pointed at the embedded servers."""
    if settings.database_url:
        yield settings
        return
    with _embedded(settings.state_dir) as (database_url, redis_url):
        yield settings.model_copy(update={"database_url": database_url, "redis_url": redis_url})


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    if args.embedded and (settings.database_url or settings.redis_url):
        print(
            "contactsync: --embedded runs its own PostgreSQL and Redis; unset CONTACTSYNC_DATABASE_URL and "
            "CONTACTSYNC_REDIS_URL to run embedded",
            file=sys.stderr,
        )
        return 2
    if not args.embedded and not (settings.database_url and settings.redis_url):
        print(
            "contactsync: CONTACTSYNC_DATABASE_URL and CONTACTSYNC_REDIS_URL must both be set to run against "
            "your PostgreSQL and Redis; or pass --embedded to start local ones (the embedded extra) and run "
            "API and worker in one process.",
            file=sys.stderr,
        )
        return 2
    if args.embedded:
        try:
            with _embedded(settings.state_dir) as (database_url, redis_url):
                embedded = settings.model_copy(update={"database_url": database_url, "redis_url": redis_url})
                return asyncio.run(_serve_embedded(embedded, args.host, args.port))
        except KeyboardInterrupt:
            return 0
    from app.main import create_app
    from app.serving import HttpLimits, uvicorn_config

    config = uvicorn_config(
        create_app(settings),
        host=args.host,
        port=args.port,
        limits=HttpLimits.from_settings(settings),
        log_config=None,
        proxy_headers=True,
        limit_concurrency=args.limit_concurrency,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    tune_collector()
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3  # uvicorn's own exit status for an app that failed to start


async def _serve_embedded(settings: Settings, host: str, port: int) -> int:
    from app.main import create_app
    from app.servers import StoppableServer
    from app.serving import HttpLimits, uvicorn_config
    from app.worker.settings import run_worker_forever

    config = uvicorn_config(
        create_app(settings), host=host, port=port, limits=HttpLimits.from_settings(settings), log_config=None
    )
    server = StoppableServer(config)
    tune_collector()
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker_forever(settings, stop=stop))
    try:
        await server.serve()
    finally:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(worker, timeout=15)
    return 0 if server.started else 3


def cmd_worker(args: argparse.Namespace) -> int:
    from app.metrics import serve_worker_metrics
    from app.worker.settings import run_worker_forever

    settings = _settings()
    if not (settings.database_url and settings.redis_url):
        print(
            "contactsync: the worker needs CONTACTSYNC_DATABASE_URL and CONTACTSYNC_REDIS_URL "
            "(embedded mode runs its worker inside `serve --embedded`)",
            file=sys.stderr,
        )
        return 2

    port = args.metrics_port or settings.worker_metrics_port
    if args.role:
        settings = settings.model_copy(update={"worker_role": args.role})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker_forever(settings, stop=stop)

    stop_metrics = serve_worker_metrics(port) if port else None
    tune_collector()
    try:
        asyncio.run(main())
    finally:
        if stop_metrics is not None:
            stop_metrics()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.db.schema import downgrade, upgrade

    settings = _settings()
    with contextlib.ExitStack() as stack:
        url = settings.database_url
        if not url:  # the embedded database of `serve --embedded`
            url, _ = stack.enter_context(_embedded(settings.state_dir, migrate=False))
        if args.downgrade:
            downgrade(url, args.downgrade)
        else:
            upgrade(url, args.revision)
    print(f"contactsync: database migrated to {args.downgrade or args.revision}")
    return 0


SANDBOXES = {
    "kommo": ("sandbox.kommo", "create_kommo_sandbox"),
    "unisender": ("sandbox.unisender", "create_unisender_sandbox"),
}
NO_SANDBOXES = "contactsync: the sandboxes are not installed in this image; run from a source checkout"


def _import_sandbox(module_name: str) -> ModuleType:
    """Import a simulator by name, or exit 2 where the ``sandbox`` package is absent.

    The sandboxes are their own top-level package: a source checkout installs it, the production image leaves
    it out, and product code never imports it, so only this function (for `sandbox` and `demo`) and the tests do.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the package itself missing; a missing dependency inside it is a real error and stays one.
        if exc.name is None or not f"{module_name}.".startswith(f"{exc.name}."):
            raise
        print(NO_SANDBOXES, file=sys.stderr)
        raise SystemExit(2) from None


def cmd_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logging import configure_logging

    configure_logging(fmt="console", level="INFO")
    module_name, factory_name = SANDBOXES[args.provider]
    app = getattr(_import_sandbox(module_name), factory_name)()
    print(
        f"contactsync: {args.provider} sandbox on http://{args.host}:{args.port} (control API under /_sandbox)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    for module_name, _ in SANDBOXES.values():
        _import_sandbox(module_name)
    from app.demo import DEMO_DIR, run_demo

    try:
        with _embedded(DEMO_DIR, fresh=True) as (database_url, redis_url):
            return _run_cancellable(
                run_demo(
                    database_url=database_url,
                    redis_url=redis_url,
                    port=args.port,
                    contacts=args.contacts,
                    edits=args.edits,
                )
            )
    except KeyboardInterrupt:
        return 0


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``argv`` only what parsing it can need (see ``register_all``)."""
    parser = argparse.ArgumentParser(
        prog="contactsync", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP API (webhooks, OAuth, operator endpoints)")
    p.add_argument("--host", default=os.environ.get("CONTACTSYNC_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("CONTACTSYNC_PORT", "8000")))
    p.add_argument(
        "--embedded",
        action="store_true",
        help="start a local PostgreSQL and Redis (data in CONTACTSYNC_STATE_DIR, default .contactsync/) and "
        "run API and worker in one process",
    )
    p.add_argument(
        "--limit-concurrency",
        type=int,
        default=None,
        help="answer 503 at once above this many concurrent requests instead of queueing them",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "worker", help="run the background worker (arq): mirrors changes, sweeps, refreshes tokens"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics (Prometheus) on this port (default: CONTACTSYNC_WORKER_METRICS_PORT, else none)",
    )
    p.add_argument(
        "--role",
        choices=("all", "live", "bulk"),
        default=None,
        help="which jobs to run: all, live (all but bulk jobs, and the cron jobs) or bulk (full syncs, "
        "re-derivations, activity notes, campaign totals, reconciles) (default: CONTACTSYNC_WORKER_ROLE, else all)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="upgrade the database schema to the latest revision (alembic)")
    p.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    p.add_argument("--downgrade", metavar="REV", help="downgrade to REV instead (e.g. base)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("sandbox", help="run a simulator of Kommo or Unisender for integration tests")
    p.add_argument("provider", choices=["kommo", "unisender"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser(
        "demo",
        help="try it: sandboxes, API and worker in one process; seed, connect, full sync, then live edits",
    )
    p.add_argument("--port", type=int, default=8000, help="API port; the sandboxes take the next two")
    p.add_argument("--contacts", type=int, default=300, help="contacts to seed in the Kommo sandbox")
    p.add_argument(
        "--edits", type=int, default=0, help="stop after this many live edits (default: until Ctrl-C)"
    )
    p.set_defaults(func=cmd_demo)

    from app.commands import register_all

    register_all(sub, argv, own=frozenset(sub.choices))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "provider", None) and args.port is None:
        args.port = 8001 if args.provider == "kommo" else 8002
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
