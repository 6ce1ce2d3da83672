"""Read-only SQL for the operator commands (``contactsync status``, ``contactsync accounts``): how much work
waits in the engine's tables and since when, over every account or per account.

Nothing here writes, and the engine never reads it: the worker's own "what is pending" queries are in the
repositories of each table, keyed to what a job needs (accounts to wake), not to what an operator reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.db.base import utcnow
from app.db.models import CrmWrite, EmailActivity, Outbox, Signup, SyncRun, WebhookEvent
from app.db.states import (
    ActivityState,
    CrmWriteState,
    EventSource,
    EventStatus,
    OutboxStatus,
    RunStatus,
    SignupState,
)


@dataclass(frozen=True, slots=True)
class Backlog:
    """Rows waiting in one queue table, and when the oldest of them started waiting (None: nothing waits)."""

    count: int = 0
    oldest_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendingWork:
    """Every queue of the engine, over all accounts."""

    events: dict[str, Backlog]  # by source (kommo, unisender)
    outbox: Backlog
    outbox_due: int  # of ``outbox``, those whose next attempt is due now (the rest wait out a backoff)
    activity: Backlog
    crm_writes: Backlog
    signups: Backlog
    runs: dict[str, int] = field(default_factory=dict)  # active runs by kind (full, remap, …)
    oldest_run_at: datetime | None = None  # when the oldest active run was created


async def _backlog(
    session: AsyncSession, since: InstrumentedAttribute[datetime], where: ColumnElement[bool]
) -> Backlog:
    count, oldest = (await session.execute(select(func.count(), func.min(since)).where(where))).one()
    return Backlog(int(count), oldest)


async def pending_work(session: AsyncSession) -> PendingWork:
    """Counts and oldest waits of every queue table (a handful of aggregate queries on indexed states)."""
    events: dict[str, Backlog] = {source.value: Backlog() for source in EventSource}
    stmt = (
        select(WebhookEvent.source, func.count(), func.min(WebhookEvent.received_at))
        .where(WebhookEvent.status == EventStatus.PENDING)
        .group_by(WebhookEvent.source)
    )
    for source, n, oldest in (await session.execute(stmt)).all():
        events[str(source)] = Backlog(int(n), oldest)
    outbox_pending = Outbox.status == OutboxStatus.PENDING
    # An outbox row's wait starts when its desired state was last set (what the lag metric measures too).
    outbox = await _backlog(session, Outbox.updated_at, outbox_pending)
    due_stmt = select(func.count()).where(outbox_pending, Outbox.next_attempt_at <= utcnow())
    due = int((await session.execute(due_stmt)).scalar_one())
    runs_stmt = (
        select(SyncRun.kind, func.count(), func.min(SyncRun.created_at))
        .where(SyncRun.status.in_(RunStatus.active()))
        .group_by(SyncRun.kind)
    )
    runs: dict[str, int] = {}
    oldest_run: datetime | None = None
    for kind, n, created in (await session.execute(runs_stmt)).all():
        runs[str(kind)] = int(n)
        oldest_run = created if oldest_run is None else min(oldest_run, created)
    return PendingWork(
        events=events,
        outbox=outbox,
        outbox_due=due,
        activity=await _backlog(
            session, EmailActivity.created_at, EmailActivity.state == ActivityState.PENDING
        ),
        crm_writes=await _backlog(session, CrmWrite.created_at, CrmWrite.state == CrmWriteState.PENDING),
        signups=await _backlog(session, Signup.created_at, Signup.state == SignupState.PENDING),
        runs=runs,
        oldest_run_at=oldest_run,
    )


async def oldest_pending(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, datetime]:
    """Per account, since when its mirror has been behind: the oldest pending webhook event or outbox row
    (accounts with neither are absent). One query over both tables."""
    if not account_ids:
        return {}
    ids = list(account_ids)
    waits: list[Any] = [
        select(WebhookEvent.account_id.label("account_id"), func.min(WebhookEvent.received_at).label("at"))
        .where(WebhookEvent.account_id.in_(ids), WebhookEvent.status == EventStatus.PENDING)
        .group_by(WebhookEvent.account_id),
        select(Outbox.account_id.label("account_id"), func.min(Outbox.updated_at).label("at"))
        .where(Outbox.account_id.in_(ids), Outbox.status == OutboxStatus.PENDING)
        .group_by(Outbox.account_id),
    ]
    both = union_all(*waits).subquery()
    stmt = select(both.c.account_id, func.min(both.c.at)).group_by(both.c.account_id)
    return {int(aid): at for aid, at in (await session.execute(stmt)).all()}
