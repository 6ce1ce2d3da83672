"""An account's Unisender side: connecting its API key (checked, target list picked, unsubscribe hook
registered), moving the hook to a new URL, and the client the sync engine pushes with."""

from __future__ import annotations

import hashlib
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as repo
from app.accounts.errors import AccountNotReady, UnknownAccount, short_error
from app.accounts.links import unisender_hook_url
from app.accounts.schemas import UnisenderIn, UnisenderOut
from app.connectors.unisender.client import UnisenderClient
from app.connectors.unisender.exceptions import (
    UnisenderAccessDenied,
    UnisenderAuthError,
    UnisenderError,
    UnisenderTransientError,
    masked,
)
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import EspAccount, Integration
from app.db.states import IntegrationStatus
from app.errors import AppError, Conflict, Unprocessable, UpstreamError

log = structlog.get_logger(__name__)

UNISENDER_LIST_TITLE = "contactsync"


def _key_id(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def _unisender(pc: ProcessContext, api_key: str) -> UnisenderClient:
    return UnisenderClient(
        pc.unisender_http,
        base_url=pc.settings.unisender_base_url,
        api_key=api_key,
        limiter=pc.unisender_limiter(_key_id(api_key)),
    )


async def unisender_client_for(
    session: AsyncSession, pc: ProcessContext, account_id: int
) -> tuple[UnisenderClient, EspAccount]:
    """The account's Unisender client and its stored ESP settings (list id), read through ``session``."""
    integration = await repo.get_integration_public(session, account_id)
    if integration is None:
        raise UnknownAccount(account_id)
    if integration.status == IntegrationStatus.DISABLED:
        raise AccountNotReady.because("integration_disabled", account_id)
    esp = await repo.get_esp_account(session, account_id)
    if esp is None:
        raise AccountNotReady.because("unisender_not_connected", account_id)
    return _unisender(pc, esp.api_key), esp


async def connect_unisender(
    *, session: AsyncSession, pc: ProcessContext, integration: Integration, data: UnisenderIn
) -> UnisenderOut:
    """Check a Unisender API key, pick the target list, register the unsubscribe hook and store the key."""
    account_id = integration.account_id
    token = integration.webhook_token
    if token is None:
        raise Conflict(
            "The account's webhook token is not kept: save the integration again (POST /integration) first.",
            code="webhook_token_unavailable",
        )
    client = _unisender(pc, data.api_key)
    list_id = await _checked_list(client, account_id, data.list_id)
    hook_at: datetime | None = None
    error: str | None = None
    try:
        await client.set_unsubscribe_hook(
            unisender_hook_url(pc, account_id, token), extra_events=pc.settings.extra_hook_events
        )
        hook_at = utcnow()
    except UnisenderError as exc:
        # The key and list are good; the hook can be registered again by re-posting the key.
        transient = isinstance(exc, UnisenderTransientError)
        log.warning(
            "accounts.unisender_hook_failed", account_id=account_id, code=exc.code, transient=transient
        )
        error = short_error(f"unisender_hook_not_registered: {exc}")
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


def _their_reason(exc: UnisenderError) -> str:
    """``": <Unisender's own words>."`` (masked, shortened), or ``"."`` when it gave none."""
    if not exc.reason:
        return "."
    return f": {masked(exc.reason).rstrip('.')}."


async def _checked_list(client: UnisenderClient, account_id: int, wanted: int | None) -> int:
    """Check the key and return the target list: ``wanted`` if it exists, else our own (created if none)."""
    try:
        await client.check_credentials()
        lists = await client.get_lists()
        if wanted is not None:
            if not any(item.id == wanted for item in lists):
                raise Unprocessable(
                    f"List {wanted} does not exist in this Unisender account.", code="unknown_list"
                )
            return wanted
        existing = [item.id for item in lists if item.title == UNISENDER_LIST_TITLE]
        return min(existing) if existing else await client.create_list(UNISENDER_LIST_TITLE)
    except UnisenderAuthError as exc:
        raise Unprocessable(
            "Unisender refused the API key" + _their_reason(exc), code="invalid_api_key"
        ) from None
    except UnisenderAccessDenied as exc:
        raise Unprocessable(
            f"Unisender denied access for this key ({exc.code})" + _their_reason(exc),
            code="unisender_access_denied",
        ) from None
    except UnisenderError as exc:
        log.warning("accounts.unisender_check_failed", account_id=account_id, code=exc.code)
        raise UpstreamError(f"Unisender could not be reached or failed ({exc.code}).") from None


async def rehook_unisender(pc: ProcessContext, account_id: int, *, new: str, old: str | None) -> bool:
    """Register the unsubscribe hook under the URL of the ``new`` webhook token and remove the ``old`` one
    (own transaction); False when the hook could not be moved (recorded in ``last_error``)."""
    async with pc.db.session_scope() as session:
        try:
            client, esp = await unisender_client_for(session, pc, account_id)
        except AppError as exc:
            log.warning("accounts.unisender_rehook_skipped", account_id=account_id, code=exc.error_code)
            return False
        now = utcnow()
        try:
            await client.set_unsubscribe_hook(
                unisender_hook_url(pc, account_id, new), extra_events=pc.settings.extra_hook_events
            )
        except UnisenderError as exc:
            log.warning("accounts.unisender_hook_failed", account_id=account_id, code=exc.code)
            esp.hook_registered_at = None
            esp.last_error, esp.last_error_at = short_error(f"unisender_hook_not_registered: {exc}"), now
            return False
        esp.hook_registered_at = now
        esp.last_error, esp.last_error_at = None, None
        if old:
            try:
                await client.remove_hook(unisender_hook_url(pc, account_id, old))
            except UnisenderError as exc:
                # The new hook works; the old URL is refused by us, and Unisender stops a failing hook.
                log.warning("accounts.unisender_old_hook_kept", account_id=account_id, code=exc.code)
                esp.last_error = short_error(f"unisender_old_hook_not_removed: {exc}")
                esp.last_error_at = now
        return True
