"""SQL of ``webhook_event``, the inbox: every accepted webhook body, stored before it is processed.

Events are stored by one statement, written once here, on either of two paths: Kommo intake runs it on an
autocommit connection through the bare driver (``store_events``: each body's INSERT is its whole unit of work,
and group commit puts many bodies in one statement), Unisender intake inside its request's transaction
(``insert_events``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.base import utcnow
from app.db.models import WebhookEvent
from app.db.sql import fetch_on_driver
from app.db.states import EventSource, EventStatus


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A webhook event to store: ``pending`` (to process) or ``unrecognised`` (kept as it came)."""

    account_id: int
    source: EventSource
    dedupe_key: str
    body: str
    status: EventStatus = EventStatus.PENDING
    last_error: str | None = None


# One array per column: the statement text never changes, so it is prepared once per connection whatever the
# number of rows. A key stored before, or twice in one statement, is stored once (the first).
_INSERT = (
    "INSERT INTO webhook_event"
    " (account_id, source, dedupe_key, body, status, last_error, attempts, received_at)"
    " SELECT a, s, k, b, st, e, 0, $7"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"
    " AS t(a, s, k, b, st, e)"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key, id"
)


def _arguments(events: Sequence[NewEvent]) -> tuple[Any, ...]:
    return (
        [e.account_id for e in events],
        [e.source.value for e in events],
        [e.dedupe_key for e in events],
        [e.body for e in events],
        [e.status.value for e in events],
        [e.last_error for e in events],
        utcnow(),
    )


async def store_events(
    conn: AsyncConnection, events: Sequence[NewEvent], *, deadline: float | None = None
) -> dict[str, int]:
    """Store events on an autocommit connection, in one statement on the bare driver; returns the ids of
    those stored now, by dedupe key. ``deadline``: see ``app.db.sql.fetch_on_driver``."""
    if not events:
        return {}
    rows = await fetch_on_driver(conn, _INSERT, _arguments(events), deadline)
    return {str(row[0]): int(row[1]) for row in rows}


async def insert_events(session: AsyncSession, events: Sequence[NewEvent]) -> dict[str, int]:
    """Store events within the session's transaction (the same statement); returns what ``store_events``
    returns."""
    if not events:
        return {}
    conn = await session.connection()
    result = await conn.exec_driver_sql(_INSERT, _arguments(events))
    rows: list[Any] = list(result.all())
    return {str(row[0]): int(row[1]) for row in rows}


async def pending_events(
    session: AsyncSession,
    account_id: int,
    source: EventSource,
    limit: int,
    *,
    exclude: Iterable[int] | None = None,
) -> list[WebhookEvent]:
    stmt = (
        select(WebhookEvent)
        .where(
            WebhookEvent.account_id == account_id,
            WebhookEvent.source == source,
            WebhookEvent.status == EventStatus.PENDING,
        )
        .order_by(WebhookEvent.id)
        .limit(limit)
    )
    if exclude:
        stmt = stmt.where(WebhookEvent.id.not_in(sorted(exclude)))
    return list((await session.execute(stmt)).scalars())


async def pending_events_by_ids(
    session: AsyncSession, account_id: int, ids: Sequence[int]
) -> list[WebhookEvent]:
    stmt = (
        select(WebhookEvent)
        .where(
            WebhookEvent.account_id == account_id,
            WebhookEvent.id.in_(list(ids)),
            WebhookEvent.status == EventStatus.PENDING,
        )
        .order_by(WebhookEvent.id)
    )
    return list((await session.execute(stmt)).scalars())


async def count_event_attempt(
    session: AsyncSession, event_id: int, *, undo: bool = False
) -> tuple[int, str | None] | None:
    """Count (or, ``undo``, take back) an attempt of a pending event; returns its attempts and last error,
    None when it is no longer pending. The caller commits this before applying the event."""
    stmt = (
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == EventStatus.PENDING)
        .values(attempts=WebhookEvent.attempts + (-1 if undo else 1))
        .returning(WebhookEvent.attempts, WebhookEvent.last_error)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (int(row[0]), row[1])


async def record_event_failure(session: AsyncSession, event_id: int, reason: str, *, final: bool) -> None:
    """Remember why a pending event failed; ``final`` gives up on it (status ``failed``)."""
    values: dict[str, Any] = {"last_error": reason}
    if final:
        values |= {"status": EventStatus.FAILED, "handled_at": utcnow()}
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == EventStatus.PENDING)
        .values(**values)
    )


async def accounts_with_stale_events(
    session: AsyncSession, older_than: datetime
) -> list[tuple[int, EventSource]]:
    stmt = (
        select(WebhookEvent.account_id, WebhookEvent.source)
        .where(WebhookEvent.status == EventStatus.PENDING, WebhookEvent.received_at < older_than)
        .group_by(WebhookEvent.account_id, WebhookEvent.source)
    )
    return [(int(a), EventSource(s)) for a, s in (await session.execute(stmt)).all()]


async def count_pending_events(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == EventStatus.PENDING)
    return int((await session.execute(stmt)).scalar_one())


async def prune_events(session: AsyncSession, older_than: datetime) -> int:
    """Forget events handled (or given up on by an operator) before ``older_than``; failed and unrecognised
    ones stay, as dead letters, until replayed or discarded."""
    result = await session.execute(
        delete(WebhookEvent).where(
            WebhookEvent.status.in_((EventStatus.DONE, EventStatus.DISCARDED)),
            WebhookEvent.handled_at < older_than,
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
