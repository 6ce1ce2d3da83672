"""``python -m app.localservers -- COMMAND…``: the test command's wrapper (see ``run_with_servers``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from app.localservers.servers import LocalServer, port_answers, start_postgres, start_redis


def run_with_servers(command: list[str], *, pg_env: str, redis_env: str, redis_db: int = 9) -> int:
    """Run ``command`` with PostgreSQL and Redis reachable: the ones on 127.0.0.1's standard ports when they
    answer, else throwaway servers in a temporary directory, stopped (and deleted) when the command ends.
    Their addresses reach the command in the environment variables ``pg_env`` (a libpq DSN of the admin
    database) and ``redis_env`` (a Redis URL); variables already set are left alone."""
    env = dict(os.environ)
    servers: list[LocalServer] = []
    with tempfile.TemporaryDirectory(prefix="contactsync-servers-") as tmp:
        try:
            if pg_env not in env and not port_answers("127.0.0.1", 5432):
                pg = start_postgres(Path(tmp) / "postgres")
                servers.append(pg)
                env[pg_env] = pg.dsn
            if redis_env not in env and not port_answers("127.0.0.1", 6379):
                redis = start_redis(Path(tmp) / "redis")
                servers.append(redis)
                env[redis_env] = f"redis://127.0.0.1:{redis.port}/{redis_db}"
            for server in servers:
                print(f"started a throwaway {server.name} on 127.0.0.1:{server.port}", flush=True)  # noqa: T201
            return _run_forwarding_signals(command, env)
        finally:
            for server in servers:
                server.stop()


def _run_forwarding_signals(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` to its end: a Ctrl-C reaches it from the terminal (same process group) and SIGTERM is
    passed on, so it ends in its own way and we stop the servers after it, not before."""
    process = subprocess.Popen(command, env=env)
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, lambda *_: None),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, _: process.send_signal(signum)),
    }
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.localservers -- COMMAND…``: the test command's wrapper (see ``run_with_servers``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m app.localservers -- COMMAND [ARGS…]", file=sys.stderr)  # noqa: T201
        return 2
    return run_with_servers(args, pg_env="CONTACTSYNC_TEST_PG", redis_env="CONTACTSYNC_TEST_REDIS_URL")


if __name__ == "__main__":
    raise SystemExit(main())
