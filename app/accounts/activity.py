"""Read-only SQL for the operator views of accounts over the sync engine's tables (``outbox``,
``webhook_event``): queue counts and the latest failures, for many accounts per query.

Kept apart from ``repository`` (which owns the accounts' own tables): nothing here writes, and nothing here
is used by the sync engine itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.db.models import Outbox, WebhookEvent
from app.db.states import EventStatus, OutboxStatus
from app.sync import outbox_repo


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """An account's outbox rows in the statuses the view shows."""

    pending: int = 0
    rejected: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class EventCounts:
    pending: int = 0
    failed: int = 0


class EventFailure(NamedTuple):
    """A webhook event given up on, with its reason (not its body)."""

    event_id: int
    attempts: int
    reason: str | None
    received_at: datetime
    failed_at: datetime | None


class Rejection(NamedTuple):
    """An outbox row the email platform refused."""

    email: str
    code: str | None
    message: str | None
    at: datetime


_SHOWN_OUTBOX = (OutboxStatus.PENDING, OutboxStatus.REJECTED, OutboxStatus.DEAD)
_SHOWN_EVENTS = (EventStatus.PENDING, EventStatus.FAILED)


async def outbox_counts(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, OutboxCounts]:
    """Per account: its outbox rows by status (accounts without such rows are absent)."""
    counts = await outbox_repo.outbox_counts(session, account_ids, statuses=_SHOWN_OUTBOX)
    return {aid: OutboxCounts(**by_status) for aid, by_status in counts.items()}


async def event_counts(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, EventCounts]:
    """Per account: its pending and failed webhook events (accounts without such events are absent)."""
    counts = await _counts_by_status(
        session, account_ids, WebhookEvent.account_id, WebhookEvent.status, _SHOWN_EVENTS
    )
    return {aid: EventCounts(**by_status) for aid, by_status in counts.items()}


async def _counts_by_status(
    session: AsyncSession,
    account_ids: Sequence[int],
    account: InstrumentedAttribute[int],
    status: InstrumentedAttribute[str],
    shown: Sequence[str],
) -> dict[int, dict[str, int]]:
    """Rows per account and status, for the ``shown`` statuses only (one grouped query)."""
    if not account_ids:
        return {}
    stmt = (
        select(account, status, func.count())
        .where(account.in_(account_ids), status.in_(shown))
        .group_by(account, status)
    )
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for account_id, state, n in (await session.execute(stmt)).all():
        counts[account_id][state] = int(n)
    return counts


async def recent_event_failures(
    session: AsyncSession, account_ids: Sequence[int], *, limit: int = 10
) -> dict[int, list[EventFailure]]:
    """The latest ``limit`` failed webhook events per account, newest first."""
    rows = await _latest_per_account(
        session,
        account_ids,
        account=WebhookEvent.account_id,
        columns=(
            WebhookEvent.id,
            WebhookEvent.attempts,
            WebhookEvent.last_error,
            WebhookEvent.received_at,
            WebhookEvent.handled_at,
        ),
        where=WebhookEvent.status == EventStatus.FAILED,
        newest_first=(WebhookEvent.id.desc(),),
        limit=limit,
    )
    return {aid: [EventFailure(*row) for row in found] for aid, found in rows.items()}


async def recent_rejections(
    session: AsyncSession, account_ids: Sequence[int], *, limit: int = 20
) -> dict[int, list[Rejection]]:
    """The latest ``limit`` rejected outbox rows per account, newest first."""
    rows = await _latest_per_account(
        session,
        account_ids,
        account=Outbox.account_id,
        columns=(Outbox.email, Outbox.reject_code, Outbox.last_error, Outbox.updated_at),
        where=Outbox.status == OutboxStatus.REJECTED,
        newest_first=(Outbox.updated_at.desc(), Outbox.id.desc()),
        limit=limit,
    )
    return {aid: [Rejection(*row) for row in found] for aid, found in rows.items()}


async def _latest_per_account(
    session: AsyncSession,
    account_ids: Sequence[int],
    *,
    account: InstrumentedAttribute[int],
    columns: Sequence[InstrumentedAttribute[Any]],
    where: ColumnElement[bool],
    newest_first: Sequence[ColumnElement[Any]],
    limit: int,
) -> dict[int, list[tuple[Any, ...]]]:
    """``columns`` of the first ``limit`` rows per account in ``newest_first`` order: one query for all the
    accounts (a window function numbers each account's rows)."""
    if not account_ids:
        return {}
    ranked = (
        select(
            account.label("account_id"),
            *(column.label(f"c{i}") for i, column in enumerate(columns)),
            func.row_number().over(partition_by=account, order_by=newest_first).label("rn"),
        )
        .where(account.in_(account_ids), where)
        .subquery()
    )
    stmt = (
        select(ranked.c.account_id, *(ranked.c[f"c{i}"] for i in range(len(columns))))
        .where(ranked.c.rn <= limit)
        .order_by(ranked.c.account_id, ranked.c.rn)
    )
    out: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for account_id, *values in (await session.execute(stmt)).all():
        out[account_id].append(tuple(values))
    return out
