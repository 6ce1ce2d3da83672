"""An account's integration: the lookup every account-scoped request starts with, create/update by the
operator, and Kommo's uninstall hook.

Services flush, never commit: the request dependency or ``db.session_scope()`` owns the transaction.
"""

from __future__ import annotations

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as repo
from app.accounts.errors import UnknownAccount
from app.accounts.links import auth_url_for, kommo_webhook_url
from app.accounts.schemas import IntegrationIn, IntegrationOut
from app.accounts.webhook_auth import WebhookAuth
from app.connectors.kommo import verify_disable_signature
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import Integration
from app.db.session import after_commit
from app.db.states import IntegrationStatus
from app.errors import Conflict, Unauthorized
from app.security.tokens import hash_token, new_webhook_token
from app.sync import spec_repo

log = structlog.get_logger(__name__)


async def require_account(session: AsyncSession, account_id: int, *, for_update: bool = False) -> Integration:
    """The account's integration, or 404 ``unknown_account`` ("Account N is not registered.")."""
    integration = await repo.get_integration(session, account_id, for_update=for_update)
    if integration is None:
        raise UnknownAccount(account_id)
    return integration


def renamed_host(host: str | None, subdomain: str) -> str | None:
    """An account's host once its subdomain changed: the same platform under the new subdomain
    (``acme.amocrm.ru`` → ``acme2.amocrm.ru``); None while no host is known."""
    return None if host is None else f"{subdomain}.{host.split('.', 1)[1]}"


async def save_integration(
    *, session: AsyncSession, pc: ProcessContext, data: IntegrationIn, auth: WebhookAuth | None = None
) -> tuple[IntegrationOut, bool]:
    """Create or update an account's Kommo integration; True when it was created.

    ``auth`` forgets the account's cached webhook identity once this commits: webhooks are checked against
    the account's subdomain and host.
    """
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
            status=IntegrationStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        try:
            await repo.add_integration(session, integration)
        except IntegrityError as exc:
            raise Conflict("The integration was created concurrently; retry the request.") from exc
        await spec_repo.ensure_default_spec(session, data.account_id)
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
            integration.status = IntegrationStatus.PENDING
            integration.webhooks_registered_at = None
        if integration.subdomain != data.subdomain:
            integration.webhooks_registered_at = None
            # The account was renamed: same platform, new subdomain (the next OAuth redirect confirms it).
            integration.kommo_host = renamed_host(integration.kommo_host, data.subdomain)
        integration.subdomain = data.subdomain
        integration.client_id = data.client_id
        integration.client_secret = data.client_secret
        integration.redirect_uri = data.redirect_uri
        integration.updated_at = now
        await session.flush()
    if auth is not None:
        _forget_after_commit(session, auth, data.account_id)
    log.info("accounts.integration_saved", account_id=data.account_id, created=created)
    out = IntegrationOut(
        account_id=integration.account_id,
        status=IntegrationStatus(integration.status),
        auth_url=auth_url_for(pc, integration.account_id),
        webhook_url=kommo_webhook_url(pc, integration.account_id, token),
    )
    return out, created


def _forget_after_commit(session: AsyncSession, auth: WebhookAuth, account_id: int) -> None:
    async def forget() -> None:
        auth.forget(account_id)

    after_commit(session, forget)


async def disable_integration(
    *, session: AsyncSession, account_id: str, client_uuid: str, signature: str
) -> None:
    """Kommo's uninstall hook: verify the signature, mark the account disabled, forget its Kommo tokens."""
    # ASCII digits only: str.isdigit() also accepts "³" or "١", which int() refuses or reads as another id;
    # and at most 18 of them, so the id fits PostgreSQL's bigint.
    account_id = account_id.strip()
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
    integration.status = IntegrationStatus.DISABLED
    integration.disabled_at = now
    integration.webhooks_registered_at = None  # Kommo drops an uninstalled integration's webhooks
    integration.updated_at = now
    await repo.delete_token(session, integration.account_id)
    await session.flush()
    log.info("accounts.integration_disabled", account_id=integration.account_id)
