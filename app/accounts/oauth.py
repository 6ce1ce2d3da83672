"""Connecting Kommo: the signed connect link, Kommo's consent redirect (a state we issued, or a widget
install), the code exchange and what a connection changes on the integration."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as repo
from app.accounts.errors import InvalidConnectLink, OAuthCallbackError, OAuthThrottled
from app.accounts.kommo import kommo_api, kommo_oauth, store_tokens
from app.accounts.webhook_auth import WebhookAuth
from app.accounts.webhooks import register_kommo_webhooks
from app.connectors.kommo import AccountHost, KommoError, authorize_url, parse_account_host, split_host
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import Integration
from app.db.states import IntegrationStatus
from app.security.tokens import InvalidState, connect_link_valid, make_state, read_state

log = structlog.get_logger(__name__)

STATE_MAX_AGE_SECONDS = 600
# Used states are kept a while longer than they stay valid, then pruned (on the next successful connection).
STATE_KEEP_SECONDS = 3600
EXCHANGE_WINDOW_SECONDS = 60.0


async def start_oauth(*, session: AsyncSession, pc: ProcessContext, account_id: int, sig: str | None) -> str:
    """Check the signed connect link and return Kommo's consent URL with a fresh state; writes nothing.

    The state is self-contained (encrypted, authenticated, timestamped), so this public endpoint stores
    nothing; single use is recorded when a callback succeeds. Without a valid signature the answer is the
    same whether the account exists or not, and the database is not read.
    """
    if not connect_link_valid(pc.settings.encryption_keys(), account_id, sig):
        raise InvalidConnectLink()
    integration = await repo.get_integration_public(session, account_id)
    if integration is None:
        raise InvalidConnectLink()  # a link signed for an integration that was removed since
    _state, raw = make_state(pc.cipher, account_id)
    log.info("accounts.oauth_started", account_id=account_id)
    return authorize_url(pc.settings.kommo_auth_url, client_id=integration.client_id, state=raw)


@dataclass(frozen=True, slots=True)
class CallbackParams:
    """The query of Kommo's redirect back to us."""

    code: str | None = None
    state: str | None = None
    referer: str | None = None
    client_id: str | None = None
    error: str | None = None
    from_widget: bool = False


@dataclass(frozen=True, slots=True)
class KommoConnected:
    account_id: int
    webhooks_registered: bool  # False: registration failed; the webhook cron retries it


async def connect_kommo(pc: ProcessContext, params: CallbackParams, *, auth: WebhookAuth) -> KommoConnected:
    """Kommo's redirect, end to end: complete the connection in its own transaction (a refusal rolls it back,
    so the state stays unused), then register the contact webhooks.

    ``auth`` forgets the account's cached webhook identity: the redirect may have named a new host.
    """
    async with pc.db.session_scope() as session:
        account_id = await complete_oauth(session=session, pc=pc, params=params)
    auth.forget(account_id)
    return KommoConnected(account_id, await register_kommo_webhooks(pc, account_id))


async def complete_oauth(*, session: AsyncSession, pc: ProcessContext, params: CallbackParams) -> int:
    """Check Kommo's redirect, exchange the code and store the tokens; return the connected account id.

    Raises ``OAuthCallbackError`` (or ``OAuthThrottled``) before anything is stored; the caller's transaction
    then rolls back, so a failed exchange leaves the state unused (the owner may retry the same link). Code
    exchanges send our client secret to Kommo, so they are capped per account and per process.
    """
    if params.error:
        raise OAuthCallbackError(
            "Access was declined in Kommo, so nothing was connected. Open the link again and choose Allow.",
            code="access_denied",
        )
    if not params.code:
        raise OAuthCallbackError("Kommo's redirect carries no authorization code.", code="missing_code")
    try:
        host = parse_account_host(params.referer or "", domains=pc.settings.account_domains)
    except ValueError:
        raise OAuthCallbackError(
            "Kommo's redirect does not name a Kommo account host (referer).", code="bad_referer"
        ) from None

    if params.state:
        integration = await _integration_for_state(session, pc, params)
    elif params.from_widget:
        integration = await _integration_for_widget(session, params, host)
    else:
        raise OAuthCallbackError("Kommo's redirect carries no state.", code="missing_state")
    account_id = integration.account_id
    _count_exchange(pc, account_id)

    oauth = kommo_oauth(
        pc,
        host=host.host,
        client_id=integration.client_id,
        client_secret=integration.client_secret,
        redirect_uri=integration.redirect_uri,
    )
    try:
        tokens = await oauth.exchange_code(params.code)
        # The code is only proof for *some* account: make sure it is the one this integration is for.
        client = kommo_api(
            pc, host=host.host, client_id=integration.client_id, access_token=tokens.access_token
        )
        account = await client.get_account()
    except KommoError as exc:
        log.info("accounts.oauth_exchange_failed", account_id=account_id, error=type(exc).__name__)
        if params.state:
            raise OAuthCallbackError(
                "Kommo did not accept the authorization code (it may have expired or been used). "
                "Start again from the connect link.",
                code="exchange_failed",
            ) from None
        raise _widget_install_failed() from None
    if account.id != account_id:
        raise OAuthCallbackError(
            f"The Kommo account that granted access (id {account.id}) is not account {account_id}.",
            code="account_mismatch",
        )
    now = utcnow()
    await store_tokens(session, account_id, tokens, issued_at=now)
    if integration.kommo_host != host.host or integration.status != IntegrationStatus.CONNECTED:
        integration.webhooks_registered_at = None  # a new installation: register again
    integration.subdomain = host.subdomain
    integration.kommo_host = host.host
    integration.status = IntegrationStatus.CONNECTED
    integration.disabled_at = None
    integration.last_error = None
    integration.last_error_at = None
    integration.updated_at = now
    await repo.prune_oauth_states(session, older_than=repo.older_than(STATE_KEEP_SECONDS))
    await session.flush()
    log.info("accounts.kommo_connected", account_id=account_id, host=host.host)
    return account_id


def same_client(sent: str | None, client_id: str) -> bool:
    """The redirect's ``client_id`` is the integration's (compared in constant time, surrounding blanks
    ignored)."""
    return hmac.compare_digest((sent or "").strip().encode(), client_id.encode())


async def _integration_for_state(
    session: AsyncSession, pc: ProcessContext, params: CallbackParams
) -> Integration:
    """The integration a state was issued for, once the state is checked and claimed (single use)."""
    try:
        state = read_state(pc.cipher, params.state or "", max_age_seconds=STATE_MAX_AGE_SECONDS)
    except InvalidState:
        raise OAuthCallbackError(
            "This authorization link is invalid or has expired (links are valid for 10 minutes). "
            "Start again from the connect link.",
            code="invalid_state",
        ) from None
    integration = await repo.get_integration(session, state.account_id)
    if integration is None:
        raise OAuthCallbackError("This authorization link is not valid.", code="invalid_state")
    if not same_client(params.client_id, integration.client_id):
        raise OAuthCallbackError(
            "The redirect comes from a different Kommo integration.", code="client_mismatch"
        )
    # Claimed in the caller's transaction: a failed exchange rolls the claim back with everything else.
    if not await repo.claim_oauth_state(session, nonce=state.nonce, account_id=state.account_id):
        raise OAuthCallbackError(
            "This authorization link was already used. Start again from the connect link.",
            code="state_used",
        )
    return integration


async def _integration_for_widget(
    session: AsyncSession, params: CallbackParams, host: AccountHost
) -> Integration:
    """Widget installs carry no state: accept only an integration we know by client id and account host.

    Kommo ignores the answer to this redirect, so every refusal reads the same (whether an integration
    exists for that client and account is nobody else's business).
    """
    known = await repo.find_integrations_by_client(session, (params.client_id or "").strip(), host.subdomain)
    candidates = [i for i in known if i.kommo_host is None or same_account_host(i.kommo_host, host)]
    if len(candidates) != 1:
        raise _widget_install_failed()
    return candidates[0]


def same_account_host(stored: str, host: AccountHost) -> bool:
    """``stored`` (an integration's host) names the same Kommo account as ``host`` (also under a former
    domain of the same platform)."""
    known = split_host(stored)
    return known is not None and known.same_account(host)


def _widget_install_failed() -> OAuthCallbackError:
    return OAuthCallbackError(
        "The widget installation could not connect Kommo. Open the connect link to connect the account.",
        code="widget_install_failed",
    )


def _count_exchange(pc: ProcessContext, account_id: int) -> None:
    """Count a code exchange against the account's and the process's caps; ``OAuthThrottled`` when full."""
    wait = pc.attempts.try_acquire(
        {
            f"oauth-exchange:{account_id}": pc.settings.oauth_exchanges_per_account,
            "oauth-exchange:*": pc.settings.oauth_exchanges_per_minute,
        },
        window=EXCHANGE_WINDOW_SECONDS,
    )
    if wait is not None:
        log.warning("accounts.oauth_exchange_throttled", account_id=account_id, retry_after=round(wait, 1))
        raise OAuthThrottled(wait)
