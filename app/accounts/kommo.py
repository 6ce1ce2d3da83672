"""Kommo access for everything that calls Kommo for an account: the one client factory, the single-flight
token refresh and the refresh cron.

Every caller goes through ``_grant``: it reads the account's integration and token once, under the account's
refresh lock, and refreshes them there when they are due. The lock makes the read and the refresh one step,
so concurrent callers (in this process or another) never refresh the same token twice: whoever comes second
reads the token the first one stored. The lock is taken in two stages: first a per-process asyncio lock,
where this process's callers queue without a pooled connection; then the holder takes a connection of its
own (never the caller's) and the PostgreSQL advisory lock, which serialises the processes. Without the first
stage, 50 callers each held a connection while they waited, and drained the pool.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as repo
from app.accounts.errors import AccountNotReady, NotReadyCode, UnknownAccount, short_error
from app.connectors.base import OAuthTokens
from app.connectors.kommo import KommoAuthError, KommoClient, KommoError, KommoOAuth
from app.connectors.kommo.client import MAX_LIMIT
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import xact_lock
from app.db.states import IntegrationStatus
from app.errors import AppError
from app.metrics import TOKEN_REFRESH

log = structlog.get_logger(__name__)

TOKEN_MIN_VALID_SECONDS = 300  # a client is handed out with at least this much of its access token left

# Keyed by event loop, because an asyncio.Lock belongs to the loop that first waits on it.
_REFRESH_LOCKS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Lock]] = WeakKeyDictionary()


def kommo_oauth(
    pc: ProcessContext, *, host: str, client_id: str, client_secret: str, redirect_uri: str
) -> KommoOAuth:
    """Kommo's token endpoint on the account's host, for the integration's credentials."""
    return KommoOAuth(
        pc.kommo_http,
        auth_url=pc.settings.kommo_auth_url,
        base_url=pc.settings.kommo_url_for(host),
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=redirect_uri,
        limiter=pc.kommo_limiter(client_id),
    )


def kommo_api(pc: ProcessContext, *, host: str, client_id: str, access_token: str) -> KommoClient:
    """A Kommo API client on the account's host; the integration's client id keys the rate budget."""
    return KommoClient(
        pc.kommo_http,
        base_url=pc.settings.kommo_url_for(host),
        access_token=access_token,
        limiter=pc.kommo_limiter(client_id),
        # Kommo's cap: batch writes (notes above all) are bound by its 7 calls a second, so each call carries
        # as many items as Kommo takes.
        write_batch_size=MAX_LIMIT,
    )


async def store_tokens(
    session: AsyncSession, account_id: int, tokens: OAuthTokens, *, issued_at: datetime
) -> None:
    """Store the token pair Kommo just issued (a code exchange or a refresh), replacing the account's."""
    await repo.save_token(
        session,
        account_id=account_id,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=issued_at + timedelta(seconds=tokens.expires_in),
    )


def refresh_due(
    *,
    expires_at: datetime,
    refreshed_at: datetime,
    now: datetime,
    min_valid_seconds: int,
    idle_before: datetime | None = None,
    force: bool = False,
) -> bool:
    """Whether a token must be refreshed: asked to, expiring within ``min_valid_seconds``, or last refreshed
    before ``idle_before`` (a refresh token unused for long expires at Kommo)."""
    if force or expires_at <= now + timedelta(seconds=min_valid_seconds):
        return True
    return idle_before is not None and refreshed_at < idle_before


async def kommo_client_for(pc: ProcessContext, account_id: int) -> KommoClient:
    """A Kommo client for the account, its access token refreshed first when it expires within 5 minutes.

    Works the same whether or not the caller has a transaction open: it reads through a short session of its
    own, never the caller's, and waits for another caller's refresh without holding a pooled connection. A
    caller inside a session keeps that session's connection meanwhile, so where the flow allows, call this
    before opening one or after closing it. Raises ``UnknownAccount`` or ``AccountNotReady`` (not
    connected, needs re-authorisation, disabled); a failed refresh raises its ``KommoError``.
    """
    grant = await _grant(pc, account_id, min_valid_seconds=TOKEN_MIN_VALID_SECONDS)
    return kommo_api(pc, host=grant.host, client_id=grant.client_id, access_token=grant.access_token)


async def refresh_kommo_token(
    pc: ProcessContext,
    account_id: int,
    *,
    min_valid_seconds: int = TOKEN_MIN_VALID_SECONDS,
    force: bool = False,
) -> bool:
    """Refresh the account's Kommo tokens if they expire within ``min_valid_seconds`` (or ``force``); True when
    this call refreshed them (single-flight, commits)."""
    grant = await _grant(pc, account_id, min_valid_seconds=min_valid_seconds, force=force)
    return grant.refreshed


async def refresh_expiring_tokens(
    pc: ProcessContext, *, within_seconds: int = 3600, idle_days: int = 30
) -> int:
    """For the token cron: refresh tokens expiring within ``within_seconds`` or idle ``idle_days``; count refreshed."""
    now = utcnow()
    idle_before = now - timedelta(days=idle_days)
    async with pc.db.session_scope() as session:
        due = await repo.tokens_due_for_refresh(
            session, expires_before=now + timedelta(seconds=within_seconds), refreshed_before=idle_before
        )
    refreshed = 0
    for account_id in due:
        try:
            grant = await _grant(pc, account_id, min_valid_seconds=within_seconds, idle_before=idle_before)
            if grant.refreshed:
                refreshed += 1
        except (AppError, KommoError) as exc:
            # One account's trouble must not stop the others; the next tick retries transient failures.
            log.warning("accounts.token_cron_failed", account_id=account_id, error=type(exc).__name__)
    return refreshed


@dataclass(frozen=True, slots=True)
class _Grant:
    """A usable access token, as stored once the lock was held (no ORM row outlives its session)."""

    host: str
    client_id: str
    access_token: str
    refreshed: bool  # False: the stored token was fresh enough (typically: another caller just refreshed it)


def _refresh_lock(account_id: int) -> asyncio.Lock:
    locks = _REFRESH_LOCKS.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(account_id, asyncio.Lock())


def not_ready_code(status: str, *, has_token: bool) -> NotReadyCode | None:
    """Why an integration in ``status`` cannot call Kommo (None: it can)."""
    if status == IntegrationStatus.DISABLED:
        return "integration_disabled"
    if status == IntegrationStatus.NEEDS_REAUTH:
        return "needs_reauth"
    return None if has_token else "kommo_not_connected"


async def _grant(
    pc: ProcessContext,
    account_id: int,
    *,
    min_valid_seconds: int,
    idle_before: datetime | None = None,
    force: bool = False,
) -> _Grant:
    """Read the account's grant once under its refresh lock and refresh it there when due (own transaction)."""
    failure: AccountNotReady | None = None
    async with _refresh_lock(account_id), pc.db.session_scope() as session:
        await xact_lock(session, f"kommo-refresh:{account_id}")
        grant = await repo.kommo_grant(session, account_id)
        if grant is None:
            raise UnknownAccount(account_id)
        host, token = grant.host, grant.token
        blocker = not_ready_code(grant.status, has_token=token is not None and host is not None)
        if blocker is not None or token is None or host is None:
            raise AccountNotReady.because(blocker or "kommo_not_connected", account_id)
        now = utcnow()
        if not refresh_due(
            expires_at=token.expires_at,
            refreshed_at=token.refreshed_at,
            now=now,
            min_valid_seconds=min_valid_seconds,
            idle_before=idle_before,
            force=force,
        ):
            TOKEN_REFRESH.labels("not_needed").inc()
            return _Grant(host, grant.client_id, token.access_token, refreshed=False)
        oauth = kommo_oauth(
            pc,
            host=host,
            client_id=grant.client_id,
            client_secret=grant.client_secret,
            redirect_uri=grant.redirect_uri,
        )
        try:
            tokens = await oauth.refresh(token.refresh_token)
        except KommoAuthError as exc:  # includes KommoInvalidGrant
            TOKEN_REFRESH.labels("invalid_grant").inc()
            log.warning("accounts.kommo_refresh_rejected", account_id=account_id, error=type(exc).__name__)
            error = short_error(f"Kommo refused the refresh token: {exc}")
            await repo.record_needs_reauth(session, account_id, error=error, at=now)
            failure = AccountNotReady.because("needs_reauth", account_id)
        except KommoError as exc:
            TOKEN_REFRESH.labels("error").inc()
            log.warning("accounts.kommo_refresh_failed", account_id=account_id, error=type(exc).__name__)
            raise
        else:
            await store_tokens(session, account_id, tokens, issued_at=now)
            TOKEN_REFRESH.labels("refreshed").inc()
            log.info("accounts.kommo_token_refreshed", account_id=account_id, expires_in=tokens.expires_in)
    if failure is not None:
        raise failure  # after the commit: needs_reauth is recorded
    return _Grant(host, grant.client_id, tokens.access_token, refreshed=True)
