"""Kommo's contact webhooks for an account: registered right after connecting, after a token rotation, and by
the webhook cron while they are missing; destinations carrying a rotated-away token are deleted."""

from __future__ import annotations

import structlog

from app.accounts import repository as repo
from app.accounts.errors import AccountNotReady, short_error
from app.accounts.kommo import kommo_client_for
from app.accounts.links import kommo_webhook_url
from app.connectors.kommo import KommoClient, KommoError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.states import IntegrationStatus

log = structlog.get_logger(__name__)

KOMMO_WEBHOOK_EVENTS: tuple[str, ...] = (
    "add_contact",
    "update_contact",
    "delete_contact",
    "restore_contact",
)
WEBHOOKS_FAILED = "Kommo webhook registration failed"  # the prefix of the last_error it records


async def register_kommo_webhooks(pc: ProcessContext, account_id: int) -> bool:
    """Register the contact webhooks right after connecting (own transaction); True on success."""
    return await _sync_kommo_webhooks(pc, account_id, only_if_missing=False)


async def ensure_kommo_webhooks(pc: ProcessContext, account_id: int) -> None:
    """For a cron: register a connected account's contact webhooks if they are not registered yet."""
    await _sync_kommo_webhooks(pc, account_id, only_if_missing=True)


async def _sync_kommo_webhooks(pc: ProcessContext, account_id: int, *, only_if_missing: bool) -> bool:
    """Register the contact webhooks (own transaction); record failures in ``last_error``; True when in place."""
    async with pc.db.session_scope() as session:
        integration = await repo.get_integration(session, account_id)
        if integration is None or integration.status != IntegrationStatus.CONNECTED:
            return False
        if only_if_missing and integration.webhooks_registered_at is not None:
            return True
        token = integration.webhook_token
        if token is None:
            log.warning("accounts.kommo_webhooks_no_token", account_id=account_id)
            return False
        try:
            client = await kommo_client_for(pc, account_id)
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
                integration.last_error = short_error(f"{WEBHOOKS_FAILED}: {exc}")
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
