"""Rotating an account's webhook token (``contactsync rotate-token``, ``POST /integration/{id}/rotate-token``)."""

from __future__ import annotations

import structlog

from app.accounts import repository as repo
from app.accounts.integrations import require_account
from app.accounts.links import kommo_webhook_url
from app.accounts.schemas import RotatedTokenOut
from app.accounts.unisender import rehook_unisender
from app.accounts.webhook_auth import WebhookAuth
from app.accounts.webhooks import register_kommo_webhooks
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.states import IntegrationStatus
from app.security.tokens import hash_token, new_webhook_token

log = structlog.get_logger(__name__)


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
        integration = await require_account(session, account_id, for_update=True)
        old = integration.webhook_token
        new = new_webhook_token()
        integration.webhook_token_hash = hash_token(new)
        integration.webhook_token = new
        integration.webhooks_registered_at = None
        integration.updated_at = utcnow()
        connected = integration.status == IntegrationStatus.CONNECTED
        has_unisender = await repo.get_esp_account(session, account_id) is not None
    if auth is not None:
        auth.forget(account_id)
    log.info("accounts.webhook_token_rotated", account_id=account_id)
    kommo = await register_kommo_webhooks(pc, account_id) if connected else None
    unisender = await rehook_unisender(pc, account_id, new=new, old=old) if has_unisender else None
    return RotatedTokenOut(
        account_id=account_id,
        webhook_url=kommo_webhook_url(pc, account_id, new),
        kommo_webhooks_registered=kommo,
        unisender_hook_registered=unisender,
    )
