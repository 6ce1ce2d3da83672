"""Operator views of accounts: connection state, queues, recent failures (no secrets)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import activity
from app.accounts import repository as repo
from app.accounts.schemas import (
    AccountView,
    EventFailureView,
    KommoView,
    OutboxView,
    RejectionView,
    UnisenderView,
)
from app.db.models import EspAccount, Integration
from app.db.states import IntegrationStatus
from app.sync import signups_repo

RECENT_REJECTIONS = 20


async def list_accounts(*, session: AsyncSession) -> list[AccountView]:
    """Every account's state."""
    return await _views(session, await repo.list_integrations(session))


async def account_view(*, session: AsyncSession, integration: Integration) -> AccountView:
    """One account's state."""
    return (await _views(session, [integration]))[0]


async def _views(session: AsyncSession, integrations: list[Integration]) -> list[AccountView]:
    ids = [i.account_id for i in integrations]
    expiries = await repo.token_expiries(session, ids)
    esps = await repo.list_esp_accounts(session, ids)
    outbox = await activity.outbox_counts(session, ids)
    events = await activity.event_counts(session, ids)
    event_failures = await activity.recent_event_failures(session, ids)
    rejections = await activity.recent_rejections(session, ids, limit=RECENT_REJECTIONS)
    signups = await signups_repo.signup_counts(session, ids)
    views: list[AccountView] = []
    for integ in integrations:
        aid = integ.account_id
        esp = esps.get(aid)
        counts = events.get(aid, activity.EventCounts())
        last_error, last_error_at = integ.last_error, integ.last_error_at
        if last_error is None and esp is not None and esp.last_error:
            last_error, last_error_at = esp.last_error, esp.last_error_at
        views.append(
            AccountView(
                account_id=aid,
                subdomain=integ.subdomain,
                host=integ.kommo_host,
                status=IntegrationStatus(integ.status),
                kommo=_kommo_view(integ, expiries.get(aid)),
                unisender=_unisender_view(esp),
                outbox=OutboxView.model_validate(outbox.get(aid, activity.OutboxCounts())),
                events_pending=counts.pending,
                events_failed=counts.failed,
                recent_event_failures=[
                    EventFailureView.model_validate(f) for f in event_failures.get(aid, [])
                ],
                last_event_at=integ.last_event_at,
                last_error=last_error,
                last_error_at=last_error_at,
                recent_rejections=[RejectionView.model_validate(r) for r in rejections.get(aid, [])],
                signups=signups.get(aid, {}),
            )
        )
    return views


def _kommo_view(integ: Integration, token_expires_at: datetime | None) -> KommoView:
    connected = integ.status == IntegrationStatus.CONNECTED and token_expires_at is not None
    return KommoView(
        connected=connected,
        token_expires_at=token_expires_at,
        needs_reauth=integ.status == IntegrationStatus.NEEDS_REAUTH,
        webhooks_registered=connected and integ.webhooks_registered_at is not None,
    )


def _unisender_view(esp: EspAccount | None) -> UnisenderView:
    if esp is None:
        return UnisenderView(connected=False, list_id=None, checked_at=None, hook_registered=False)
    return UnisenderView(
        connected=True,
        list_id=esp.list_id,
        checked_at=esp.checked_at,
        hook_registered=esp.hook_registered_at is not None,
    )
