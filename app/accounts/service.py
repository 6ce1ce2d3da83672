"""Accounts: integrations, the Kommo OAuth dance and token lifecycle, the Unisender credential, account views.

Services flush, never commit: the request dependency or ``db.session_scope()`` owns the transaction. The
functions that must commit on their own (token refresh, webhook registration, the cron helpers) open their own
``session_scope`` and say so.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as repo
from app.accounts.schemas import (
    AccountView,
    EventFailureView,
    IntegrationIn,
    IntegrationOut,
    KommoView,
    OutboxView,
    RejectionView,
    RotatedTokenOut,
    UnisenderIn,
    UnisenderOut,
    UnisenderView,
)
from app.accounts.webhook_auth import WebhookAuth
from app.connectors.kommo import (
    AccountHost,
    KommoAuthError,
    KommoClient,
    KommoError,
    KommoOAuth,
    authorize_url,
    parse_account_host,
    split_host,
    verify_disable_signature,
)
from app.connectors.unisender.client import UnisenderClient
from app.connectors.unisender.exceptions import (
    UnisenderAccessDenied,
    UnisenderAuthError,
    UnisenderError,
    UnisenderTransientError,
)
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import xact_lock
from app.db.models import EspAccount, Integration
from app.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    Unprocessable,
    UpstreamError,
)
from app.metrics import TOKEN_REFRESH
from app.security.tokens import (
    InvalidState,
    connect_link_valid,
    hash_token,
    make_state,
    new_webhook_token,
    read_state,
    sign_connect_link,
)
from app.security.widget_jwt import InvalidWidgetToken, unverified_account_id, verify_widget_token

log = structlog.get_logger(__name__)

STATE_MAX_AGE_SECONDS = 600
# Used states are kept a while longer than they stay valid, then pruned (on the next successful connection).
STATE_KEEP_SECONDS = 3600
EXCHANGE_WINDOW_SECONDS = 60.0
MAX_ACCOUNT_ID = 2**63 - 1
TOKEN_MIN_VALID_SECONDS = 300
KOMMO_WEBHOOK_EVENTS: tuple[str, ...] = (
    "add_contact",
    "update_contact",
    "delete_contact",
    "restore_contact",
)
UNISENDER_LIST_TITLE = "contactsync"
RECENT_REJECTIONS = 20
WEBHOOKS_FAILED = "Kommo webhook registration failed"
_MAX_ERROR = 500

# Per-account refresh locks of this process, in front of the PostgreSQL advisory lock: concurrent callers in
# one process queue here without a pooled connection, so at most one of them holds a connection while it waits
# for another process's refresh (50 callers each holding one, plus one each for the advisory wait, drained a
# pool of 10 + 10). Keyed by event loop, because an asyncio.Lock belongs to the loop that first waits on it.
_REFRESH_LOCKS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Lock]] = WeakKeyDictionary()


class AccountNotReady(AppError):
    """The account cannot be worked on now (``code``: kommo_not_connected, needs_reauth,
    integration_disabled, unisender_not_connected)."""

    code = "account_not_ready"
    status_code = 409


class OAuthCallbackError(BadRequest):
    """Kommo's redirect cannot complete the connection; the message is shown to the person who clicked."""


class OAuthThrottled(AppError):
    """Too many code exchanges for the account (or in total) within a minute; ``retry_after`` seconds."""

    code = "too_many_attempts"
    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "Too many connection attempts for this Kommo account. Wait a minute, then start again from the "
            "connect link."
        )
        self.retry_after = max(1, int(retry_after + 0.999))


class InvalidConnectLink(NotFound):
    """``/auth`` without a valid link: one answer for unknown accounts, bad and missing signatures alike."""

    code = "invalid_link"


# --- small helpers ------------------------------------------------------------------------------------------


def _short(message: object) -> str:
    return str(message)[:_MAX_ERROR]


def _public(pc: ProcessContext) -> str:
    return pc.settings.public_url.rstrip("/")


def auth_url_for(pc: ProcessContext, account_id: int) -> str:
    """The link an account owner follows to connect Kommo (signed: ``/auth`` refuses any other)."""
    sig = sign_connect_link(pc.settings.encryption_keys(), account_id)
    return f"{_public(pc)}/auth?id={account_id}&sig={sig}"


def kommo_webhook_url(pc: ProcessContext, account_id: int, token: str) -> str:
    """Where Kommo posts contact events for this account."""
    return f"{_public(pc)}/webhooks/kommo/{account_id}?token={token}"


def unisender_hook_url(pc: ProcessContext, account_id: int, token: str) -> str:
    """Where Unisender posts unsubscribe events for this account."""
    return f"{_public(pc)}/webhooks/unisender/{account_id}?token={token}"


def _oauth_for(pc: ProcessContext, integration: Integration, host: str) -> KommoOAuth:
    return KommoOAuth(
        pc.kommo_http,
        auth_url=pc.settings.kommo_auth_url,
        base_url=pc.settings.kommo_url_for(host),
        client_id=integration.client_id,
        client_secret=integration.client_secret,
        redirect_uri=integration.redirect_uri,
        limiter=pc.kommo_limiter(integration.client_id),
    )


def _not_ready(code: str, account_id: int) -> AccountNotReady:
    messages = {
        "kommo_not_connected": "Kommo is not connected for this account: the owner must open the auth link.",
        "needs_reauth": "Kommo access was lost (refresh token revoked or expired): the owner must re-authorise.",
        "integration_disabled": "The integration was uninstalled in Kommo.",
        "unisender_not_connected": "No Unisender API key is stored for this account.",
    }
    return AccountNotReady(
        f"Account {account_id}: {messages[code]}", code=code, extra={"account_id": account_id}
    )


def _check_kommo_status(integration: Integration) -> None:
    if integration.status == "disabled":
        raise _not_ready("integration_disabled", integration.account_id)
    if integration.status == "needs_reauth":
        raise _not_ready("needs_reauth", integration.account_id)


async def _require_integration(session: AsyncSession, account_id: int) -> Integration:
    integration = await repo.get_integration(session, account_id)
    if integration is None:
        raise NotFound(f"No integration for account {account_id}.")
    return integration


# --- integration --------------------------------------------------------------------------------------------


async def save_integration(
    *, session: AsyncSession, pc: ProcessContext, data: IntegrationIn
) -> tuple[IntegrationOut, bool]:
    """Create or update an account's Kommo integration; True when it was created."""
    now = utcnow()
    integration = await repo.get_integration(session, data.account_id, for_update=True)
    created = integration is None
    if integration is None:
        token = new_webhook_token()
        integration = Integration(
            account_id=data.account_id,
            subdomain=data.subdomain,
            client_id=data.client_id,
            client_secret=data.client_secret,
            redirect_uri=data.redirect_uri,
            webhook_token_hash=hash_token(token),
            webhook_token=token,
            status="pending",
            created_at=now,
            updated_at=now,
        )
        try:
            await repo.add_integration(session, integration)
        except IntegrityError as exc:
            raise Conflict("The integration was created concurrently; retry the request.") from exc
    else:
        token = integration.webhook_token or ""
        if not token:
            # A row without a kept token (written elsewhere): issue one so the URLs can be shown again.
            token = new_webhook_token()
            integration.webhook_token_hash = hash_token(token)
            integration.webhook_token = token
            integration.webhooks_registered_at = None
        if integration.client_id != data.client_id:
            # Tokens belong to the old Kommo integration: they cannot be refreshed with the new client.
            await repo.delete_token(session, data.account_id)
            integration.status = "pending"
            integration.webhooks_registered_at = None
        if integration.subdomain != data.subdomain:
            integration.webhooks_registered_at = None
            if integration.kommo_host is not None:
                # The account was renamed: same platform, new subdomain (the next OAuth redirect confirms it).
                integration.kommo_host = f"{data.subdomain}.{integration.kommo_host.split('.', 1)[1]}"
        integration.subdomain = data.subdomain
        integration.client_id = data.client_id
        integration.client_secret = data.client_secret
        integration.redirect_uri = data.redirect_uri
        integration.updated_at = now
        await session.flush()
    log.info("accounts.integration_saved", account_id=data.account_id, created=created)
    out = IntegrationOut(
        account_id=integration.account_id,
        status=integration.status,
        auth_url=auth_url_for(pc, integration.account_id),
        webhook_url=kommo_webhook_url(pc, integration.account_id, token),
    )
    return out, created


# --- OAuth --------------------------------------------------------------------------------------------------


async def start_oauth(*, session: AsyncSession, pc: ProcessContext, account_id: int, sig: str | None) -> str:
    """Check the signed connect link and return Kommo's consent URL with a fresh state; writes nothing.

    The state is self-contained (encrypted, authenticated, timestamped), so this public endpoint stores
    nothing; single use is recorded when a callback succeeds. Without a valid signature the answer is the
    same whether the account exists or not, and the database is not read.
    """
    if not connect_link_valid(pc.settings.encryption_keys(), account_id, sig):
        raise _invalid_link()
    integration = await repo.get_integration_public(session, account_id)
    if integration is None:
        raise _invalid_link()  # a link signed for an integration that was removed since
    _state, raw = make_state(pc.cipher, account_id)
    log.info("accounts.oauth_started", account_id=account_id)
    return authorize_url(pc.settings.kommo_auth_url, client_id=integration.client_id, state=raw)


def _invalid_link() -> InvalidConnectLink:
    return InvalidConnectLink(
        "This connect link is not valid. Ask the operator for the account's current link."
    )


@dataclass(frozen=True, slots=True)
class CallbackParams:
    """The query of Kommo's redirect back to us."""

    code: str | None = None
    state: str | None = None
    referer: str | None = None
    client_id: str | None = None
    error: str | None = None
    from_widget: bool = False


def _same(a: str | None, b: str) -> bool:
    return hmac.compare_digest((a or "").strip().encode(), b.encode())


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

    oauth = _oauth_for(pc, integration, host.host)
    try:
        tokens = await oauth.exchange_code(params.code)
        # The code is only proof for *some* account: make sure it is the one this integration is for.
        client = KommoClient(
            pc.kommo_http,
            base_url=pc.settings.kommo_url_for(host.host),
            access_token=tokens.access_token,
            limiter=pc.kommo_limiter(integration.client_id),
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
    await repo.save_token(
        session,
        account_id=account_id,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=now + timedelta(seconds=tokens.expires_in),
    )
    if integration.kommo_host != host.host or integration.status != "connected":
        integration.webhooks_registered_at = None  # a new installation: register again
    integration.subdomain = host.subdomain
    integration.kommo_host = host.host
    integration.status = "connected"
    integration.disabled_at = None
    integration.last_error = None
    integration.last_error_at = None
    integration.updated_at = now
    await repo.prune_oauth_states(session, older_than=repo.older_than(STATE_KEEP_SECONDS))
    await session.flush()
    log.info("accounts.kommo_connected", account_id=account_id, host=host.host)
    return account_id


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
    if not _same(params.client_id, integration.client_id):
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
    candidates = [i for i in known if i.kommo_host is None or _same_host(i.kommo_host, host)]
    if len(candidates) != 1:
        raise _widget_install_failed()
    return candidates[0]


def _same_host(stored: str, host: AccountHost) -> bool:
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


async def _sync_kommo_webhooks(pc: ProcessContext, account_id: int, *, only_if_missing: bool) -> bool:
    """Register the contact webhooks (own transaction); record failures in ``last_error``; True when in place."""
    async with pc.db.session_scope() as session:
        integration = await repo.get_integration(session, account_id)
        if integration is None or integration.status != "connected":
            return False
        if only_if_missing and integration.webhooks_registered_at is not None:
            return True
        token = integration.webhook_token
        if token is None:
            log.warning("accounts.kommo_webhooks_no_token", account_id=account_id)
            return False
        try:
            client = await kommo_client_for(session, pc, account_id)
            destination = kommo_webhook_url(pc, account_id, token)
            await client.register_webhook(destination, KOMMO_WEBHOOK_EVENTS)
            await _drop_stale_webhooks(pc, client, account_id, keep=destination)
        except (KommoError, AccountNotReady) as exc:
            log.warning(
                "accounts.kommo_webhooks_failed",
                account_id=account_id,
                error=type(exc).__name__,
                code=getattr(exc, "code", None),
            )
            # Re-read: a refresh inside kommo_client_for may have changed the row in its own transaction.
            integration = await repo.get_integration(session, account_id)
            if integration is not None:
                integration.webhooks_registered_at = None
                integration.last_error = _short(f"{WEBHOOKS_FAILED}: {exc}")
                integration.last_error_at = utcnow()
                await session.flush()
            return False
        integration.webhooks_registered_at = utcnow()
        if integration.last_error and integration.last_error.startswith(WEBHOOKS_FAILED):
            integration.last_error = None
            integration.last_error_at = None
        await session.flush()
        log.info("accounts.kommo_webhooks_registered", account_id=account_id)
        return True


async def _drop_stale_webhooks(pc: ProcessContext, client: KommoClient, account_id: int, keep: str) -> None:
    """Delete the account's webhooks at Kommo that point at us with a token rotated away since: they could
    only be refused from now on. A failure leaves registration to be retried, which tries this again."""
    ours = kommo_webhook_url(pc, account_id, "")
    for hook in await client.list_webhooks():
        if hook.destination.startswith(ours) and hook.destination != keep:
            await client.delete_webhook(hook.destination)
            log.info("accounts.kommo_stale_webhook_deleted", account_id=account_id)


async def register_kommo_webhooks(pc: ProcessContext, account_id: int) -> bool:
    """Register the contact webhooks right after connecting (own transaction); True on success."""
    return await _sync_kommo_webhooks(pc, account_id, only_if_missing=False)


async def ensure_kommo_webhooks(pc: ProcessContext, account_id: int) -> None:
    """For a cron: register a connected account's contact webhooks if they are not registered yet."""
    await _sync_kommo_webhooks(pc, account_id, only_if_missing=True)


async def connected_account_ids(pc: ProcessContext) -> list[int]:
    """Accounts whose Kommo side is connected (for crons that walk every account)."""
    async with pc.db.session_scope() as session:
        return await repo.connected_account_ids(session)


# --- Kommo disable hook -------------------------------------------------------------------------------------


async def disable_integration(
    *, session: AsyncSession, account_id: str, client_uuid: str, signature: str
) -> None:
    """Kommo's uninstall hook: verify the signature, mark the account disabled, forget its Kommo tokens."""
    # ASCII digits only: str.isdigit() also accepts "³" or "١", which int() refuses or reads as another id;
    # and at most 18 of them, so the id fits PostgreSQL's bigint.
    known = account_id.isascii() and account_id.isdigit() and len(account_id) <= 18
    integration = await repo.get_integration(session, int(account_id)) if known else None
    if integration is None:
        # Same work and answer as a bad signature: the hook must not reveal which accounts exist.
        verify_disable_signature(client_uuid, account_id, signature, client_id="x", client_secret="x")
        raise Unauthorized("Invalid disable-hook signature.", code="invalid_signature")
    if not verify_disable_signature(
        client_uuid,
        account_id,
        signature,
        client_id=integration.client_id,
        client_secret=integration.client_secret,
    ):
        raise Unauthorized("Invalid disable-hook signature.", code="invalid_signature")
    now = utcnow()
    integration.status = "disabled"
    integration.disabled_at = now
    integration.webhooks_registered_at = None  # Kommo drops an uninstalled integration's webhooks
    integration.updated_at = now
    await repo.delete_token(session, integration.account_id)
    await session.flush()
    log.info("accounts.integration_disabled", account_id=integration.account_id)


# --- Unisender ----------------------------------------------------------------------------------------------


def _key_id(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def _unisender(pc: ProcessContext, api_key: str) -> UnisenderClient:
    return UnisenderClient(
        pc.unisender_http,
        base_url=pc.settings.unisender_base_url,
        api_key=api_key,
        limiter=pc.unisender_limiter(_key_id(api_key)),
    )


async def connect_unisender(
    *, session: AsyncSession, pc: ProcessContext, account_id: int, data: UnisenderIn
) -> UnisenderOut:
    """Check a Unisender API key, pick the target list, register the unsubscribe hook and store the key."""
    integration = await _require_integration(session, account_id)
    token = integration.webhook_token
    if token is None:
        raise Conflict(
            "The account's webhook token is not kept: save the integration again (POST /integration) first.",
            code="webhook_token_unavailable",
        )
    client = _unisender(pc, data.api_key)
    try:
        await client.check_credentials()
        lists = await client.get_lists()
        if data.list_id is not None:
            if not any(item.id == data.list_id for item in lists):
                raise Unprocessable(
                    f"List {data.list_id} does not exist in this Unisender account.", code="unknown_list"
                )
            list_id = data.list_id
        else:
            existing = [item.id for item in lists if item.title == UNISENDER_LIST_TITLE]
            list_id = min(existing) if existing else await client.create_list(UNISENDER_LIST_TITLE)
    except UnisenderAuthError:
        raise Unprocessable("Unisender refused the API key.", code="invalid_api_key") from None
    except UnisenderAccessDenied as exc:
        raise Unprocessable(
            f"Unisender denied access for this key ({exc.code}).", code="unisender_access_denied"
        ) from None
    except UnisenderError as exc:
        log.warning("accounts.unisender_check_failed", account_id=account_id, code=exc.code)
        raise UpstreamError(f"Unisender could not be reached or failed ({exc.code}).") from None

    hook_at: datetime | None = None
    error: str | None = None
    try:
        await client.set_unsubscribe_hook(unisender_hook_url(pc, account_id, token))
        hook_at = utcnow()
    except UnisenderError as exc:
        # The key and list are good; the hook can be registered again by re-posting the key.
        transient = isinstance(exc, UnisenderTransientError)
        log.warning(
            "accounts.unisender_hook_failed", account_id=account_id, code=exc.code, transient=transient
        )
        error = _short(f"unisender_hook_not_registered: {exc}")
    esp = await repo.upsert_esp_account(
        session,
        account_id=account_id,
        api_key=data.api_key,
        list_id=list_id,
        checked_at=utcnow(),
        hook_registered_at=hook_at,
        last_error=error,
    )
    log.info("accounts.unisender_connected", account_id=account_id, list_id=list_id, hook=hook_at is not None)
    return UnisenderOut(
        account_id=account_id, list_id=list_id, hook_url_registered=esp.hook_registered_at is not None
    )


async def widget_account(*, session: AsyncSession, token: str | None, account_id: int | None = None) -> int:
    """The account a Kommo widget token (``X-Auth-Token``) was issued to, for a change to that account.

    The token must verify with the client secret of the account's integration (401 ``invalid_token``
    otherwise, also for an unknown account); it must be for ``account_id`` when one is given (403
    ``wrong_account``) and for one of the account's administrators (403 ``not_account_admin``): whoever
    sets the Unisender key receives every contact's address.
    """
    lookup = account_id if account_id is not None else unverified_account_id(token or "")
    integration = None
    if token and lookup is not None and 0 < lookup <= MAX_ACCOUNT_ID:
        integration = await repo.get_integration(session, lookup)
    if integration is None or token is None:
        raise Unauthorized("Missing or invalid widget token (X-Auth-Token).", code="invalid_token")
    try:
        claims = verify_widget_token(
            token,
            secret=integration.client_secret,
            client_id=integration.client_id,
            redirect_uri=integration.redirect_uri,
        )
    except InvalidWidgetToken as exc:
        log.info("accounts.widget_token_refused", account_id=lookup, reason=str(exc))
        raise Unauthorized("Missing or invalid widget token (X-Auth-Token).", code="invalid_token") from None
    if claims.account_id != integration.account_id:
        raise Forbidden("This widget token was issued for another Kommo account.", code="wrong_account")
    if not claims.is_admin:
        raise Forbidden(
            "Only an administrator of the Kommo account can set its Unisender key.", code="not_account_admin"
        )
    return claims.account_id


# --- webhook token rotation ---------------------------------------------------------------------------------


async def rotate_webhook_token(
    pc: ProcessContext, account_id: int, *, auth: WebhookAuth | None = None
) -> RotatedTokenOut:
    """Issue a new webhook token, then point Kommo's webhooks and Unisender's hook at the new URLs.

    The new token is committed first, so the old one is refused from that moment: at once by ``auth`` (this
    process's intake cache) and by other processes once their cache entry expires (5 s). Re-registration
    follows in its own transactions; what failed is reported and recorded in ``last_error``, and Kommo's
    webhooks are registered again by the webhook cron (which also deletes the old destination).
    """
    async with pc.db.session_scope() as session:
        integration = await repo.get_integration(session, account_id, for_update=True)
        if integration is None:
            raise NotFound(f"No integration for account {account_id}.")
        old = integration.webhook_token
        new = new_webhook_token()
        integration.webhook_token_hash = hash_token(new)
        integration.webhook_token = new
        integration.webhooks_registered_at = None
        integration.updated_at = utcnow()
        connected = integration.status == "connected"
        has_unisender = await repo.get_esp_account(session, account_id) is not None
    if auth is not None:
        auth.forget(account_id)
    log.info("accounts.webhook_token_rotated", account_id=account_id)
    kommo = await register_kommo_webhooks(pc, account_id) if connected else None
    unisender = await _rehook_unisender(pc, account_id, new=new, old=old) if has_unisender else None
    return RotatedTokenOut(
        account_id=account_id,
        webhook_url=kommo_webhook_url(pc, account_id, new),
        kommo_webhooks_registered=kommo,
        unisender_hook_registered=unisender,
    )


async def _rehook_unisender(pc: ProcessContext, account_id: int, *, new: str, old: str | None) -> bool:
    """Register the unsubscribe hook under the new URL and remove the old one (own transaction)."""
    async with pc.db.session_scope() as session:
        try:
            client, esp = await unisender_client_for(session, pc, account_id)
        except AppError as exc:
            log.warning("accounts.unisender_rehook_skipped", account_id=account_id, code=exc.error_code)
            return False
        now = utcnow()
        try:
            await client.set_unsubscribe_hook(unisender_hook_url(pc, account_id, new))
        except UnisenderError as exc:
            log.warning("accounts.unisender_hook_failed", account_id=account_id, code=exc.code)
            esp.hook_registered_at = None
            esp.last_error, esp.last_error_at = _short(f"unisender_hook_not_registered: {exc}"), now
            return False
        esp.hook_registered_at = now
        esp.last_error, esp.last_error_at = None, None
        if old:
            try:
                await client.remove_hook(unisender_hook_url(pc, account_id, old))
            except UnisenderError as exc:
                # The new hook works; the old URL is refused by us, and Unisender stops a failing hook.
                log.warning("accounts.unisender_old_hook_kept", account_id=account_id, code=exc.code)
                esp.last_error = _short(f"unisender_old_hook_not_removed: {exc}")
                esp.last_error_at = now
        return True


# --- for the sync engine ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _KommoAccess:
    """What a Kommo client needs, read in one place (no ORM rows outlive the session that read them)."""

    host: str
    client_id: str
    access_token: str
    expires_at: datetime


async def _read_access(session: AsyncSession, account_id: int) -> _KommoAccess:
    integration = await repo.get_integration(session, account_id)
    if integration is None:
        raise NotFound(f"No integration for account {account_id}.")
    _check_kommo_status(integration)
    token = await repo.get_token(session, account_id)
    if token is None or integration.kommo_host is None:
        raise _not_ready("kommo_not_connected", account_id)
    return _KommoAccess(integration.kommo_host, integration.client_id, token.access_token, token.expires_at)


async def kommo_client_for(session: AsyncSession, pc: ProcessContext, account_id: int) -> KommoClient:
    """A Kommo client for the account, refreshing the access token first when it expires within 5 minutes.

    A caller whose session is already in a transaction (it holds a connection anyway) is read through it; any
    other caller through a short session of its own, so that it holds no pooled connection while it waits for
    a refresh. The refresh itself always runs in its own committed transaction (``refresh_kommo_token``).
    """
    if session.in_transaction():
        access = await _read_access(session, account_id)
    else:
        async with pc.db.session_scope() as own:
            access = await _read_access(own, account_id)
    if access.expires_at <= utcnow() + timedelta(seconds=TOKEN_MIN_VALID_SECONDS):
        outcome = await _refresh(
            pc, account_id, min_valid_seconds=TOKEN_MIN_VALID_SECONDS, force=False, idle_before=None
        )
        access = outcome.access
    return KommoClient(
        pc.kommo_http,
        base_url=pc.settings.kommo_url_for(access.host),
        access_token=access.access_token,
        limiter=pc.kommo_limiter(access.client_id),
    )


def _refresh_lock(account_id: int) -> asyncio.Lock:
    locks = _REFRESH_LOCKS.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(account_id, asyncio.Lock())


async def refresh_kommo_token(
    pc: ProcessContext, account_id: int, *, min_valid_seconds: int = 300, force: bool = False
) -> bool:
    """Refresh the account's Kommo tokens if they expire within ``min_valid_seconds`` (single-flight, commits)."""
    outcome = await _refresh(
        pc, account_id, min_valid_seconds=min_valid_seconds, force=force, idle_before=None
    )
    return outcome.refreshed


@dataclass(frozen=True, slots=True)
class _Refreshed:
    refreshed: bool  # False: the token was fresh enough (typically: another caller had just refreshed it)
    access: _KommoAccess  # the token as stored once the lock was held


async def _refresh(
    pc: ProcessContext,
    account_id: int,
    *,
    min_valid_seconds: int,
    force: bool,
    idle_before: datetime | None,
) -> _Refreshed:
    failure: AccountNotReady | None = None
    # First this process's callers queue (no connection held), then the one in front takes a connection and
    # the advisory lock, which serialises the processes; whoever comes second re-reads the row, finds it fresh.
    async with _refresh_lock(account_id), pc.db.session_scope() as session:
        await xact_lock(session, f"kommo-refresh:{account_id}")
        integration = await repo.get_integration(session, account_id)
        if integration is None:
            raise NotFound(f"No integration for account {account_id}.")
        _check_kommo_status(integration)
        token = await repo.get_token(session, account_id)
        host = integration.kommo_host
        if token is None or host is None:
            raise _not_ready("kommo_not_connected", account_id)
        now = utcnow()
        due = token.expires_at <= now + timedelta(seconds=min_valid_seconds)
        idle = idle_before is not None and token.refreshed_at < idle_before
        current = _KommoAccess(host, integration.client_id, token.access_token, token.expires_at)
        if not (force or due or idle):
            TOKEN_REFRESH.labels("not_needed").inc()
            return _Refreshed(False, current)
        try:
            tokens = await _oauth_for(pc, integration, host).refresh(token.refresh_token)
        except KommoAuthError as exc:  # includes KommoInvalidGrant
            TOKEN_REFRESH.labels("invalid_grant").inc()
            log.warning("accounts.kommo_refresh_rejected", account_id=account_id, error=type(exc).__name__)
            integration.status = "needs_reauth"
            integration.last_error = _short(f"Kommo refused the refresh token: {exc}")
            integration.last_error_at = now
            integration.updated_at = now
            await session.flush()
            failure = _not_ready("needs_reauth", account_id)
        except KommoError as exc:
            TOKEN_REFRESH.labels("error").inc()
            log.warning("accounts.kommo_refresh_failed", account_id=account_id, error=type(exc).__name__)
            raise
        else:
            expires_at = now + timedelta(seconds=tokens.expires_in)
            await repo.save_token(
                session,
                account_id=account_id,
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_at=expires_at,
            )
            current = _KommoAccess(host, integration.client_id, tokens.access_token, expires_at)
            TOKEN_REFRESH.labels("refreshed").inc()
            log.info("accounts.kommo_token_refreshed", account_id=account_id, expires_in=tokens.expires_in)
    if failure is not None:
        raise failure  # after the commit: needs_reauth is recorded
    return _Refreshed(True, current)


async def unisender_client_for(
    session: AsyncSession, pc: ProcessContext, account_id: int
) -> tuple[UnisenderClient, EspAccount]:
    """The account's Unisender client and its stored ESP settings (list id)."""
    integration = await repo.get_integration_public(session, account_id)
    if integration is None:
        raise NotFound(f"No integration for account {account_id}.")
    if integration.status == "disabled":
        raise _not_ready("integration_disabled", account_id)
    esp = await repo.get_esp_account(session, account_id)
    if esp is None:
        raise _not_ready("unisender_not_connected", account_id)
    return _unisender(pc, esp.api_key), esp


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
            outcome = await _refresh(
                pc, account_id, min_valid_seconds=within_seconds, force=False, idle_before=idle_before
            )
            if outcome.refreshed:
                refreshed += 1
        except (AppError, KommoError) as exc:
            # One account's trouble must not stop the others; the next tick retries transient failures.
            log.warning("accounts.token_cron_failed", account_id=account_id, error=type(exc).__name__)
    return refreshed


# --- account views ------------------------------------------------------------------------------------------


async def list_accounts(*, session: AsyncSession) -> list[AccountView]:
    """Every account's state for operators (no secrets)."""
    return await _views(session, await repo.list_integrations(session))


async def get_account(*, session: AsyncSession, account_id: int) -> AccountView:
    """One account's state for operators (no secrets)."""
    integration = await repo.get_integration_public(session, account_id)
    if integration is None:
        raise NotFound(f"No integration for account {account_id}.")
    return (await _views(session, [integration]))[0]


async def _views(session: AsyncSession, integrations: list[Integration]) -> list[AccountView]:
    ids = [i.account_id for i in integrations]
    expiries = await repo.token_expiries(session, ids)
    esps = await repo.list_esp_accounts(session, ids)
    outbox = await repo.outbox_counts(session, ids)
    events = await repo.pending_event_counts(session, ids)
    failed_events = await repo.failed_event_counts(session, ids)
    event_failures = await repo.recent_event_failures(session, ids)
    rejections = await repo.recent_rejections(session, ids, limit=RECENT_REJECTIONS)
    views: list[AccountView] = []
    for integ in integrations:
        aid = integ.account_id
        esp = esps.get(aid)
        expires_at = expiries.get(aid)
        connected = integ.status == "connected" and expires_at is not None
        last_error, last_error_at = integ.last_error, integ.last_error_at
        if last_error is None and esp is not None and esp.last_error:
            last_error, last_error_at = esp.last_error, esp.last_error_at
        views.append(
            AccountView(
                account_id=aid,
                subdomain=integ.subdomain,
                host=integ.kommo_host,
                status=integ.status,
                kommo=KommoView(
                    connected=connected,
                    token_expires_at=expires_at,
                    needs_reauth=integ.status == "needs_reauth",
                    webhooks_registered=connected and integ.webhooks_registered_at is not None,
                ),
                unisender=UnisenderView(
                    connected=esp is not None,
                    list_id=esp.list_id if esp is not None else None,
                    checked_at=esp.checked_at if esp is not None else None,
                    hook_registered=esp is not None and esp.hook_registered_at is not None,
                ),
                outbox=OutboxView(**outbox.get(aid, {})),
                events_pending=events.get(aid, 0),
                events_failed=failed_events.get(aid, 0),
                recent_event_failures=[EventFailureView(**f) for f in event_failures.get(aid, [])],
                last_event_at=integ.last_event_at,
                last_error=last_error,
                last_error_at=last_error_at,
                recent_rejections=[RejectionView(**r) for r in rejections.get(aid, [])],
            )
        )
    return views


__all__ = [
    "AccountNotReady",
    "CallbackParams",
    "InvalidConnectLink",
    "OAuthCallbackError",
    "OAuthThrottled",
    "complete_oauth",
    "connect_unisender",
    "connected_account_ids",
    "disable_integration",
    "ensure_kommo_webhooks",
    "get_account",
    "kommo_client_for",
    "list_accounts",
    "refresh_expiring_tokens",
    "refresh_kommo_token",
    "register_kommo_webhooks",
    "rotate_webhook_token",
    "save_integration",
    "start_oauth",
    "unisender_client_for",
    "widget_account",
]
