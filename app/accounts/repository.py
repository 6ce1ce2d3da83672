"""All SQL of the accounts domain: integrations, Kommo tokens, ESP accounts, OAuth states, account views."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import defer

from app.db.base import utcnow
from app.db.models import (
    EspAccount,
    Integration,
    KommoToken,
    OAuthStateRow,
    Outbox,
    WebhookEvent,
)
from app.sync.outbox_repo import outbox_counts as outbox_counts

# --- integration --------------------------------------------------------------------------------------------


async def get_integration(
    session: AsyncSession, account_id: int, *, for_update: bool = False
) -> Integration | None:
    stmt = select(Integration).where(Integration.account_id == account_id)
    if for_update:
        stmt = stmt.with_for_update()
    result = await session.execute(stmt.execution_options(populate_existing=True))
    return result.scalar_one_or_none()


async def get_integration_public(session: AsyncSession, account_id: int) -> Integration | None:
    """The integration without its encrypted columns (no decryption: the cheap read for webhook checks)."""
    stmt = (
        select(Integration)
        .options(
            defer(Integration.client_secret, raiseload=True),
            defer(Integration.webhook_token, raiseload=True),
        )
        .where(Integration.account_id == account_id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


_WEBHOOK_IDENTITY = select(
    Integration.webhook_token_hash, Integration.subdomain, Integration.kommo_host
).where(Integration.account_id == bindparam("account_id"))


async def webhook_identity(conn: AsyncConnection, account_id: int) -> tuple[str, str, str | None] | None:
    """``(webhook_token_hash, subdomain, kommo_host)`` of the account, read on an autocommit connection (the
    webhook intake's one read per cache miss); None for an unknown account."""
    row = (await conn.execute(_WEBHOOK_IDENTITY, {"account_id": account_id})).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


async def find_integrations_by_client(
    session: AsyncSession, client_id: str, subdomain: str
) -> list[Integration]:
    stmt = select(Integration).where(Integration.client_id == client_id, Integration.subdomain == subdomain)
    return list((await session.execute(stmt)).scalars())


async def list_integrations(session: AsyncSession) -> list[Integration]:
    stmt = (
        select(Integration)
        .options(
            defer(Integration.client_secret, raiseload=True),
            defer(Integration.webhook_token, raiseload=True),
        )
        .order_by(Integration.account_id)
    )
    return list((await session.execute(stmt)).scalars())


async def add_integration(session: AsyncSession, integration: Integration) -> None:
    session.add(integration)
    await session.flush()


async def connected_account_ids(session: AsyncSession) -> list[int]:
    stmt = (
        select(Integration.account_id)
        .where(Integration.status == "connected")
        .order_by(Integration.account_id)
    )
    return list((await session.execute(stmt)).scalars())


# --- kommo tokens -------------------------------------------------------------------------------------------


async def get_token(session: AsyncSession, account_id: int) -> KommoToken | None:
    stmt = (
        select(KommoToken)
        .where(KommoToken.account_id == account_id)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def save_token(
    session: AsyncSession,
    *,
    account_id: int,
    access_token: str,
    refresh_token: str,
    expires_at: datetime,
) -> None:
    """Insert or replace the token pair (both values pass through the encrypted column type)."""
    now = utcnow()
    stmt = insert(KommoToken).values(
        account_id=account_id,
        access_token=access_token,
        refresh_token=refresh_token,
        expires_at=expires_at,
        refreshed_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[KommoToken.account_id],
        set_={
            "access_token": stmt.excluded.access_token,
            "refresh_token": stmt.excluded.refresh_token,
            "expires_at": stmt.excluded.expires_at,
            "refreshed_at": stmt.excluded.refreshed_at,
        },
    )
    await session.execute(stmt)
    await session.flush()


async def delete_token(session: AsyncSession, account_id: int) -> int:
    result = await session.execute(delete(KommoToken).where(KommoToken.account_id == account_id))
    return int(getattr(result, "rowcount", 0) or 0)


async def tokens_due_for_refresh(
    session: AsyncSession, *, expires_before: datetime, refreshed_before: datetime
) -> list[int]:
    """Connected accounts whose access token expires soon or whose refresh token has been idle too long."""
    stmt = (
        select(KommoToken.account_id)
        .join(Integration, Integration.account_id == KommoToken.account_id)
        .where(
            Integration.status == "connected",
            or_(KommoToken.expires_at < expires_before, KommoToken.refreshed_at < refreshed_before),
        )
        .order_by(KommoToken.expires_at)
    )
    return list((await session.execute(stmt)).scalars())


# --- oauth state --------------------------------------------------------------------------------------------


async def claim_oauth_state(session: AsyncSession, *, nonce: str, account_id: int) -> bool:
    """Record that this state completed a connection; False when it already did (one winner, even when two
    callbacks race: the second waits on the key until the first commits or rolls back)."""
    now = utcnow()
    stmt = (
        insert(OAuthStateRow)
        .values(nonce=nonce, account_id=account_id, created_at=now, used_at=now)
        .on_conflict_do_nothing(index_elements=[OAuthStateRow.nonce])
        .returning(OAuthStateRow.nonce)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def prune_oauth_states(session: AsyncSession, *, older_than: datetime) -> int:
    """Forget used states older than ``older_than`` (an index range scan on ``created_at``)."""
    result = await session.execute(delete(OAuthStateRow).where(OAuthStateRow.created_at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)


# --- esp account --------------------------------------------------------------------------------------------


async def get_esp_account(session: AsyncSession, account_id: int) -> EspAccount | None:
    stmt = (
        select(EspAccount)
        .where(EspAccount.account_id == account_id)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def upsert_esp_account(
    session: AsyncSession,
    *,
    account_id: int,
    api_key: str,
    list_id: int,
    checked_at: datetime,
    hook_registered_at: datetime | None,
    last_error: str | None,
) -> EspAccount:
    row = await get_esp_account(session, account_id)
    now = utcnow()
    if row is None:
        row = EspAccount(account_id=account_id, provider="unisender", created_at=now)
        session.add(row)
    row.api_key = api_key
    row.list_id = list_id
    row.checked_at = checked_at
    row.hook_registered_at = hook_registered_at
    row.last_error = last_error
    row.last_error_at = now if last_error else None
    row.updated_at = now
    await session.flush()
    return row


async def list_esp_accounts(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, EspAccount]:
    if not account_ids:
        return {}
    stmt = (
        select(EspAccount)
        .options(defer(EspAccount.api_key, raiseload=True))
        .where(EspAccount.account_id.in_(account_ids))
    )
    return {row.account_id: row for row in (await session.execute(stmt)).scalars()}


async def token_expiries(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, datetime]:
    if not account_ids:
        return {}
    stmt = select(KommoToken.account_id, KommoToken.expires_at).where(KommoToken.account_id.in_(account_ids))
    return {row[0]: row[1] for row in (await session.execute(stmt)).all()}


# --- account views ------------------------------------------------------------------------------------------


async def pending_event_counts(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, int]:
    if not account_ids:
        return {}
    stmt = (
        select(WebhookEvent.account_id, func.count())
        .where(WebhookEvent.account_id.in_(account_ids), WebhookEvent.status == "pending")
        .group_by(WebhookEvent.account_id)
    )
    return {row[0]: int(row[1]) for row in (await session.execute(stmt)).all()}


async def failed_event_counts(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, int]:
    if not account_ids:
        return {}
    stmt = (
        select(WebhookEvent.account_id, func.count())
        .where(WebhookEvent.account_id.in_(account_ids), WebhookEvent.status == "failed")
        .group_by(WebhookEvent.account_id)
    )
    return {row[0]: int(row[1]) for row in (await session.execute(stmt)).all()}


async def recent_event_failures(
    session: AsyncSession, account_ids: Sequence[int], *, limit: int = 10
) -> dict[int, list[dict[str, Any]]]:
    """The latest ``limit`` failed webhook events per account, with their reasons (not their bodies)."""
    if not account_ids:
        return {}
    ranked = (
        select(
            WebhookEvent.account_id.label("account_id"),
            WebhookEvent.id.label("event_id"),
            WebhookEvent.attempts.label("attempts"),
            WebhookEvent.last_error.label("reason"),
            WebhookEvent.received_at.label("received_at"),
            WebhookEvent.handled_at.label("failed_at"),
            func.row_number()
            .over(partition_by=WebhookEvent.account_id, order_by=WebhookEvent.id.desc())
            .label("rn"),
        )
        .where(WebhookEvent.account_id.in_(account_ids), WebhookEvent.status == "failed")
        .subquery()
    )
    columns = ("event_id", "attempts", "reason", "received_at", "failed_at")
    stmt = (
        select(ranked.c.account_id, *(ranked.c[name] for name in columns))
        .where(ranked.c.rn <= limit)
        .order_by(ranked.c.account_id, ranked.c.rn)
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for account_id, *values in (await session.execute(stmt)).all():
        out.setdefault(account_id, []).append(dict(zip(columns, values, strict=True)))
    return out


async def recent_rejections(
    session: AsyncSession, account_ids: Sequence[int], *, limit: int = 20
) -> dict[int, list[dict[str, Any]]]:
    """The latest ``limit`` rejected outbox rows per account (one query, a window function)."""
    if not account_ids:
        return {}
    ranked = (
        select(
            Outbox.account_id.label("account_id"),
            Outbox.email.label("email"),
            Outbox.reject_code.label("code"),
            Outbox.last_error.label("message"),
            Outbox.updated_at.label("at"),
            func.row_number()
            .over(partition_by=Outbox.account_id, order_by=(Outbox.updated_at.desc(), Outbox.id.desc()))
            .label("rn"),
        )
        .where(Outbox.account_id.in_(account_ids), Outbox.status == "rejected")
        .subquery()
    )
    stmt = (
        select(ranked.c.account_id, ranked.c.email, ranked.c.code, ranked.c.message, ranked.c.at)
        .where(ranked.c.rn <= limit)
        .order_by(ranked.c.account_id, ranked.c.rn)
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for account_id, email, code, message, at in (await session.execute(stmt)).all():
        out.setdefault(account_id, []).append({"email": email, "code": code, "message": message, "at": at})
    return out


def older_than(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
