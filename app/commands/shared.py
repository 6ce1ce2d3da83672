"""What the operator commands share: the service's settings, a database and a queue opened like the service's,
and plain-text output (tables, ages). Not a command module itself (not in ``MODULES``)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis

from app.config import Settings
from app.db.session import Database, DbTimeouts, create_engine

# A command holds at most a couple of connections at once: no need for the service's pool of 20.
POOL_SIZE = 2


def out(line: str = "") -> None:
    """One line of the command's answer (stdout); diagnostics go to stderr through ``fail``."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(message: str) -> None:
    sys.stderr.write(f"contactsync: {message}\n")
    sys.stderr.flush()


def reason(exc: BaseException) -> str:
    """An exception as one short line: its class and first line, redacted (connection errors may quote an
    address, a DSN or a password)."""
    from app.logging import redact_text

    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {redact_text(first)}"[:200]


def out_json(value: Any) -> None:
    out(json.dumps(value, indent=2, default=_json_default))


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def service_settings(*, redis: bool) -> Settings | None:
    """The service's settings (exit 2 on a configuration error), or None after saying why when the database
    (and, ``redis``, Redis) is not named: these commands read the running service's servers, and the
    embedded ones belong to the process that started them."""
    from app.cli import _settings
    from app.logging import configure_logging

    settings = _settings()
    configure_logging(fmt=settings.effective_log_format, level=settings.log_level)  # stderr, redacted
    missing = [
        name
        for name, value, needed in (
            ("CONTACTSYNC_DATABASE_URL", settings.database_url, True),
            ("CONTACTSYNC_REDIS_URL", settings.redis_url, redis),
        )
        if needed and not value
    ]
    if missing:
        fail(
            f"{' and '.join(missing)} must be set to the service's own (the embedded servers of "
            "`serve --embedded` are reachable only from its process: use its HTTP API there)"
        )
        return None
    return settings


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """The service's database with its deadlines, and its keys configured (account rows carry encrypted
    columns); disposed when the block ends."""
    from app.security.crypto import configure_encryption

    configure_encryption(settings.encryption_keys())
    engine = create_engine(
        settings.require_database_url(),
        pool_size=POOL_SIZE,
        timeouts=DbTimeouts(
            connect=settings.db_connect_timeout,
            statement=settings.db_statement_timeout,
            pool=settings.db_pool_timeout,
        ),
    )
    db = Database(engine)
    try:
        yield db
    finally:
        await db.dispose()


@asynccontextmanager
async def open_queue(settings: Settings) -> AsyncIterator[ArqRedis]:
    """The service's arq queue (connected lazily, like the API's); closed when the block ends."""
    from app.queue import create_queue

    queue = await create_queue(settings.require_redis_url())
    try:
        yield queue
    finally:
        await queue.aclose()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, wide enough for their longest cell."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def age(seconds: float | None) -> str:
    """A duration as operators read it: ``-`` for none, ``42s``, ``3m05s``, ``2h14m``, ``3d04h``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def since(at: datetime | None, now: datetime) -> float | None:
    return None if at is None else (now - at).total_seconds()


def short_time(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M")


def clip(text: str | None, width: int) -> str:
    """One line of at most ``width`` characters (``-`` for nothing)."""
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
