"""Fast tests of the accounts rules: the refresh decision, readiness, host and client checks, widget-token
claims, the account lookup's 404, the accounts' queries (real PostgreSQL, inside a transaction that is rolled
back) and the Kommo client factory's reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import activity
from app.accounts import repository as repo
from app.accounts.errors import AccountNotReady, UnknownAccount
from app.accounts.integrations import renamed_host, require_account
from app.accounts.kommo import kommo_client_for, not_ready_code, refresh_due
from app.accounts.oauth import same_account_host, same_client
from app.accounts.widget import check_widget_claims
from app.connectors.kommo import KommoClient, parse_account_host
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import Integration, KommoToken, Outbox, WebhookEvent
from app.db.states import EventSource, EventStatus, IntegrationStatus, OutboxStatus
from app.errors import Forbidden
from app.security.widget_jwt import WidgetClaims
from tests.accounts.conftest import account_reads, integration_row
from tests.support.db import rolled_back_session

NOW = datetime(2026, 11, 30, 12, 0, 0)


# --- the refresh decision -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "refreshed_ago", "idle_days", "force", "due"),
    [
        (3600, 0, None, False, False),  # fresh
        (301, 0, None, False, False),  # just outside the 5 minutes
        (300, 0, None, False, True),  # expires within the 5 minutes (the boundary counts)
        (-60, 0, None, False, True),  # expired
        (3600, 0, None, True, True),  # forced
        (3600, 31, 30, False, True),  # refresh token idle for longer than the cron allows
        (3600, 29, 30, False, False),  # used recently enough
    ],
)
def test_refresh_due(
    expires_in: int, refreshed_ago: int, idle_days: int | None, force: bool, due: bool
) -> None:
    assert (
        refresh_due(
            expires_at=NOW + timedelta(seconds=expires_in),
            refreshed_at=NOW - timedelta(days=refreshed_ago),
            now=NOW,
            min_valid_seconds=300,
            idle_before=None if idle_days is None else NOW - timedelta(days=idle_days),
            force=force,
        )
        is due
    )


@pytest.mark.parametrize(
    ("status", "has_token", "code"),
    [
        (IntegrationStatus.CONNECTED, True, None),
        (IntegrationStatus.CONNECTED, False, "kommo_not_connected"),
        (IntegrationStatus.PENDING, False, "kommo_not_connected"),
        # A refused refresh or an uninstall wins over a stored token.
        (IntegrationStatus.NEEDS_REAUTH, True, "needs_reauth"),
        (IntegrationStatus.DISABLED, True, "integration_disabled"),
    ],
)
def test_not_ready_code(status: IntegrationStatus, has_token: bool, code: str | None) -> None:
    assert not_ready_code(status, has_token=has_token) == code


def test_not_ready_error_names_the_account_and_the_reason() -> None:
    err = AccountNotReady.because("needs_reauth", 42)
    assert (err.status_code, err.error_code) == (409, "needs_reauth")
    assert err.body() == {
        "error": "needs_reauth",
        "detail": "Account 42: Kommo access was lost (refresh token revoked or expired): the owner must "
        "re-authorise.",
        "account_id": 42,
    }


# --- hosts and clients --------------------------------------------------------------------------------------


def test_renamed_host_keeps_the_platform() -> None:
    assert renamed_host("acme.amocrm.ru", "acme2") == "acme2.amocrm.ru"
    assert renamed_host("acme.kommo.com", "beta") == "beta.kommo.com"
    assert renamed_host(None, "beta") is None  # not connected yet: the OAuth redirect will name the host


def test_same_account_host_accepts_the_former_domain_only() -> None:
    kommo = parse_account_host("acme.kommo.com")
    assert same_account_host("acme.kommo.com", kommo)
    assert same_account_host("acme.amocrm.com", kommo)  # Kommo's former global domain: the same account
    assert not same_account_host("acme.amocrm.ru", kommo)  # another platform
    assert not same_account_host("other.kommo.com", kommo)
    assert not same_account_host("not a host", kommo)


def test_same_client_ignores_blanks_only() -> None:
    assert same_client(" client-1 ", "client-1")
    assert not same_client("client-1x", "client-1")
    assert not same_client("CLIENT-1", "client-1")
    assert not same_client(None, "client-1")


# --- widget-token claims ------------------------------------------------------------------------------------


def test_widget_claims_must_be_the_accounts_admin() -> None:
    check_widget_claims(WidgetClaims(account_id=7, user_id=1, is_admin=True), account_id=7)
    for claims, code in (
        (WidgetClaims(account_id=8, user_id=1, is_admin=True), "wrong_account"),
        (WidgetClaims(account_id=7, user_id=1, is_admin=False), "not_account_admin"),
        (WidgetClaims(account_id=8, user_id=None, is_admin=False), "wrong_account"),
    ):
        with pytest.raises(Forbidden) as caught:
            check_widget_claims(claims, account_id=7)
        assert caught.value.error_code == code


# --- the accounts' queries ----------------------------------------------------------------------------------


@pytest.fixture
async def session(ctx: ProcessContext) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back at the end (nothing it writes stays)."""
    async with rolled_back_session(ctx.db.engine) as s:
        yield s


async def test_unknown_account_is_one_404(session: AsyncSession) -> None:
    with pytest.raises(UnknownAccount) as caught:
        await require_account(session, 404)
    assert caught.value.status_code == 404
    assert caught.value.body() == {"error": "unknown_account", "detail": "Account 404 is not registered."}
    session.add(integration_row(405))
    await session.flush()
    assert (await require_account(session, 405)).client_id == "client-405"


async def test_kommo_grant_with_and_without_a_token(session: AsyncSession) -> None:
    expires = utcnow() + timedelta(hours=1)
    session.add_all([integration_row(1), integration_row(2, IntegrationStatus.PENDING)])
    await session.flush()
    session.add(KommoToken(account_id=1, access_token="a1", refresh_token="r1", expires_at=expires))
    await session.flush()

    one = await repo.kommo_grant(session, 1)
    assert one is not None
    assert one.token is not None
    assert (one.status, one.host, one.client_id) == ("connected", "acc1.kommo.com", "client-1")
    assert one.client_secret.startswith("secret-")
    assert (one.token.access_token, one.token.refresh_token, one.token.expires_at) == ("a1", "r1", expires)
    two = await repo.kommo_grant(session, 2)
    assert two is not None
    assert (two.status, two.token) == (IntegrationStatus.PENDING, None)
    assert await repo.kommo_grant(session, 3) is None


async def test_activity_counts_and_latest_failures_per_account(session: AsyncSession) -> None:
    now = utcnow()
    statuses = [OutboxStatus.PENDING, OutboxStatus.PENDING, OutboxStatus.REJECTED, OutboxStatus.DONE]
    session.add_all(
        Outbox(
            account_id=1,
            email=f"{i}@x.io",
            payload={},
            payload_hash="h",
            status=status,
            reject_code="invalid_email" if status == OutboxStatus.REJECTED else None,
            updated_at=now - timedelta(minutes=i),
        )
        for i, status in enumerate(statuses)
    )
    session.add_all(
        WebhookEvent(
            account_id=account_id,
            source=EventSource.KOMMO,
            dedupe_key=f"{account_id}-{i}",
            body="",
            status=EventStatus.FAILED if i % 2 else EventStatus.PENDING,
            attempts=i,
            last_error=f"reason {i}",
        )
        for account_id in (1, 2)
        for i in range(5)
    )
    await session.flush()

    assert await activity.outbox_counts(session, [1, 2]) == {1: activity.OutboxCounts(pending=2, rejected=1)}
    assert await activity.event_counts(session, [1, 2]) == {
        1: activity.EventCounts(pending=3, failed=2),
        2: activity.EventCounts(pending=3, failed=2),
    }
    failures = await activity.recent_event_failures(session, [1], limit=1)
    assert [(f.attempts, f.reason) for f in failures[1]] == [(3, "reason 3")]  # the newest only
    rejections = await activity.recent_rejections(session, [1, 2])
    assert [(r.email, r.code) for r in rejections[1]] == [("2@x.io", "invalid_email")]
    assert 2 not in rejections
    assert await activity.outbox_counts(session, []) == {}


async def test_kommo_client_for_ignores_the_callers_transaction(ctx: ProcessContext) -> None:
    """The same answer inside a caller's transaction as outside it: the grant is read once, through a session
    of its own. (It used to read through the caller's session when one was open: this caller's uncommitted
    change made it refuse with integration_disabled.)"""
    async with ctx.db.session_scope() as setup:
        setup.add(integration_row(9))
        await setup.flush()
        expires = utcnow() + timedelta(hours=1)
        setup.add(KommoToken(account_id=9, access_token="a9", refresh_token="r9", expires_at=expires))
    with account_reads(ctx.db) as reads:
        assert isinstance(await kommo_client_for(ctx, 9), KommoClient)
    assert len(reads) == 1, reads
    async with ctx.db.session_scope() as caller:
        await caller.execute(
            update(Integration).where(Integration.account_id == 9).values(status=IntegrationStatus.DISABLED)
        )
        assert isinstance(await kommo_client_for(ctx, 9), KommoClient)
        await caller.rollback()
    with pytest.raises(UnknownAccount):
        await kommo_client_for(ctx, 10)
