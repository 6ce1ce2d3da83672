"""SQL over the accounts' own tables: ``integration``, ``kommo_token``, ``esp_account``, ``oauth_state``.

Lookups return ``None`` for an unknown account; the services decide what that means. Public names are stable:
the sync engine imports lookups from here rather than repeating them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import defer

from app.db.base import utcnow
from app.db.models import EspAccount, Integration, KommoToken, OAuthStateRow
from app.db.states import IntegrationStatus

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


class WebhookIdentityRow(NamedTuple):
    token_hash: str
    subdomain: str
    host: str | None  # None until the account is connected


async def webhook_identity(conn: AsyncConnection, account_id: int) -> WebhookIdentityRow | None:
    """The account's webhook token hash, subdomain and host, read on an autocommit connection (the webhook
    intake's one read per cache miss); None for an unknown account."""
    row = (await conn.execute(_WEBHOOK_IDENTITY, {"account_id": account_id})).one_or_none()
    return None if row is None else WebhookIdentityRow(row[0], row[1], row[2])


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


async def connected_account_ids(session: AsyncSession) -> list[int]:
    """Every account whose Kommo connection works (the reconcile cron's list)."""
    stmt = select(Integration.account_id).where(Integration.status == IntegrationStatus.CONNECTED)
    return [int(x) for x in (await session.execute(stmt)).scalars()]


async def add_integration(session: AsyncSession, integration: Integration) -> None:
    session.add(integration)
    await session.flush()


# --- kommo tokens -------------------------------------------------------------------------------------------


class StoredToken(NamedTuple):
    access_token: str
    refresh_token: str
    expires_at: datetime
    refreshed_at: datetime


class KommoGrant(NamedTuple):
    """What calling Kommo for an account takes: its integration's state and credentials, and its token pair
    (None while no token is stored)."""

    status: str
    host: str | None
    client_id: str
    client_secret: str
    redirect_uri: str
    token: StoredToken | None


_KOMMO_GRANT = (
    select(
        Integration.status,
        Integration.kommo_host,
        Integration.client_id,
        Integration.client_secret,
        Integration.redirect_uri,
        KommoToken.access_token,
        KommoToken.refresh_token,
        KommoToken.expires_at,
        KommoToken.refreshed_at,
    )
    .outerjoin(KommoToken, KommoToken.account_id == Integration.account_id)
    .where(Integration.account_id == bindparam("account_id"))
)


async def kommo_grant(session: AsyncSession, account_id: int) -> KommoGrant | None:
    """The integration and its token in one query; None for an unknown account."""
    row = (await session.execute(_KOMMO_GRANT, {"account_id": account_id})).one_or_none()
    if row is None:
        return None
    status, host, client_id, client_secret, redirect_uri, access, refresh, expires_at, refreshed_at = row
    token = None if access is None else StoredToken(access, refresh, expires_at, refreshed_at)
    return KommoGrant(status, host, client_id, client_secret, redirect_uri, token)


async def record_needs_reauth(session: AsyncSession, account_id: int, *, error: str, at: datetime) -> None:
    """Kommo refused the account's refresh token: only the owner's new consent can connect it again."""
    await session.execute(
        update(Integration)
        .where(Integration.account_id == account_id)
        .values(status=IntegrationStatus.NEEDS_REAUTH, last_error=error, last_error_at=at, updated_at=at)
    )


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
            Integration.status == IntegrationStatus.CONNECTED,
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


def older_than(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
