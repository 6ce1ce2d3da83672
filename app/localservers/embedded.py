"""The servers of ``serve --embedded`` and ``demo``: one process at a time per state directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.localservers.servers import (
    LocalPostgres,
    LocalServer,
    LocalServerError,
    start_postgres,
    start_redis,
)

DATABASE = "contactsync"


@dataclass(frozen=True)
class EmbeddedServers:
    postgres: LocalPostgres
    redis: LocalServer
    database: str = DATABASE

    @property
    def database_url(self) -> str:
        return self.postgres.url(self.database)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold ``lock_path``'s lock while the block runs; refuse at once if another process holds it. The
    kernel drops the lock when its holder exits, however it exits: a crash leaves no stale lock."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise LocalServerError(
                f"{lock_path.parent} is in use by another contactsync process (pid {holder}) running its "
                "servers: stop that one first, or give this one its own CONTACTSYNC_STATE_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def embedded_servers(state_dir: Path, *, fresh_database: bool = False) -> Iterator[EmbeddedServers]:
    """PostgreSQL (data kept in ``state_dir/postgres``, database ``contactsync`` created on first use) and
    Redis (nothing kept) for one process, stopped when the block exits. ``fresh_database`` drops the
    database first (the demo starts from nothing every time)."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(state_dir / "servers.lock"):
        postgres = start_postgres(state_dir / "postgres", durable=True)
        try:
            if fresh_database:
                postgres.sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            if not postgres.sql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
                postgres.sql(f'CREATE DATABASE "{DATABASE}"')
            redis = start_redis(state_dir / "redis")
            try:
                yield EmbeddedServers(postgres=postgres, redis=redis)
            finally:
                redis.stop()
        finally:
            postgres.stop()
