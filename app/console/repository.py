"""SQL of the console: its sessions (``console_session``) and the one figure the account views lack, the
age of each account's oldest pending webhook event (its lag)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import WebhookEvent
from app.db.operator_models import ConsoleSession
from app.db.states import EventStatus


async def add_session(session: AsyncSession, token_hash: str, *, now: datetime, expires_at: datetime) -> None:
    session.add(
        ConsoleSession(token_hash=token_hash, created_at=now, expires_at=expires_at, last_seen_at=now)
    )
    await session.flush()


async def live_session(session: AsyncSession, token_hash: str, *, now: datetime) -> ConsoleSession | None:
    """The session with this hash, unless it expired."""
    stmt = select(ConsoleSession).where(
        ConsoleSession.token_hash == token_hash, ConsoleSession.expires_at > now
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def touch_session(session: AsyncSession, token_hash: str, *, now: datetime) -> None:
    await session.execute(
        update(ConsoleSession).where(ConsoleSession.token_hash == token_hash).values(last_seen_at=now)
    )


async def delete_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash))


async def delete_expired(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def oldest_pending_events(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, datetime]:
    """Per account: when its oldest still-pending webhook event arrived (accounts with none are absent)."""
    if not account_ids:
        return {}
    stmt = (
        select(WebhookEvent.account_id, func.min(WebhookEvent.received_at))
        .where(WebhookEvent.account_id.in_(account_ids), WebhookEvent.status == EventStatus.PENDING)
        .group_by(WebhookEvent.account_id)
    )
    return {int(aid): at for aid, at in (await session.execute(stmt)).all()}
