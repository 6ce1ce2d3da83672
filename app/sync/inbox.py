"""SQL of webhook intake: the two statements a webhook costs (the token hash read, the event insert).

Intake runs on an autocommit connection (``Database.autocommit``), not an ORM session: each statement is its
own unit of work, so storing a body is one round trip, like a bare driver call. The statements are built
once so SQLAlchemy's compiled cache always hits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Select, bindparam, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.base import utcnow
from app.db.models import Integration

_TOKEN_HASH: Select[Any] = select(Integration.webhook_token_hash).where(
    Integration.account_id == bindparam("account_id")
)


# Many bodies in one statement (group commit), one array per column: the statement text never changes, so
# it is prepared once per connection whatever the batch size. It runs on the driver connection, skipping
# SQLAlchemy's per-statement work, which costs about as much as the round trip itself here
# (tests/sync/test_inbox.py checks that it stores what the model's own INSERT stores).
_PG_INSERT_EVENTS = (
    "INSERT INTO webhook_event (account_id, source, dedupe_key, body, status, attempts, received_at)"
    " SELECT a, s, k, b, 'pending', 0, r"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS t(a, s, k, b, r)"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key, id"
)


@dataclass(frozen=True, slots=True)
class NewEvent:
    account_id: int
    source: str
    dedupe_key: str
    body: str


async def store_events(
    conn: AsyncConnection, events: Sequence[NewEvent], *, deadline: float | None = None
) -> dict[str, int]:
    """Store many raw bodies in one statement; returns the ids of those stored now, by dedupe key (a key
    stored before, or twice in ``events``, is stored once). ``deadline``: seconds for the statement on
    PostgreSQL, by the driver's own timer (TimeoutError after; the engine's statement timeout when None)."""
    if not events:
        return {}
    now = utcnow()
    columns = (
        [e.account_id for e in events],
        [e.source for e in events],
        [e.dedupe_key for e in events],
        [e.body for e in events],
        [now] * len(events),
    )
    rows = await _fetch_pg(conn, _PG_INSERT_EVENTS, columns, deadline)
    return {str(row[0]): int(row[1]) for row in rows}


async def _fetch_pg(
    conn: AsyncConnection, sql: str, args: Sequence[Any], deadline: float | None = None
) -> list[Any]:
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection  # asyncpg.Connection, in autocommit mode (no transaction to manage)
    try:
        rows: list[Any] = await driver.fetch(sql, *args, timeout=deadline)
        return rows
    except (TimeoutError, asyncio.CancelledError):
        # No answer within the driver's deadline, or our caller's deadline cancelled us (webhook intake):
        # the statement is still in flight, so the connection is discarded, not pooled half-used. A timeout
        # is not a dead connection, so it is not retried at once (the database is slow or unreachable).
        await conn.invalidate()
        raise
    except Exception as exc:
        # Outside SQLAlchemy's execute, so classify as it would: a broken connection is discarded and reported
        # as OperationalError (503, and ``run_autocommit`` retries once on a fresh connection).
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        lost = isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError) or (
            sqlstate.startswith(("08", "57P"))
        )
        await conn.invalidate()
        error = OperationalError if lost else DBAPIError
        raise error(sql, None, exc, connection_invalidated=True) from exc


async def webhook_token_hash(conn: AsyncConnection, account_id: int) -> str | None:
    """The stored hash of the account's webhook token; None for an unknown account."""
    value = (await conn.execute(_TOKEN_HASH, {"account_id": account_id})).scalar_one_or_none()
    return None if value is None else str(value)


async def store_event(
    conn: AsyncConnection, *, account_id: int, source: str, dedupe_key: str, body: str
) -> int | None:
    """Store one raw webhook body; None when the same delivery was stored before."""
    stored = await store_events(conn, [NewEvent(account_id, source, dedupe_key, body)])
    return stored.get(dedupe_key)
