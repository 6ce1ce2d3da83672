"""Which CRM and which email platform serve an account: the one place of the engine that names them.

The engine (events, full sync, outbox, unsubscribes) is written against the protocols of
``app.connectors.base`` and the error categories of ``app.connectors.errors``; this module binds those to
Kommo and Unisender. Webhook intake (``app.sync.ingest``) has a route per provider and may name them too.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.kommo import kommo_client_for
from app.accounts.unisender import unisender_client_for
from app.connectors.base import CrmClient, CrmWebhookParser, EmailPlatformClient, EspHookReader
from app.connectors.kommo.webhooks import parse_webhook
from app.connectors.unisender.activity import activity_kind
from app.connectors.unisender.client import UnisenderClient
from app.connectors.unisender.hooks import read_delivery
from app.context import ProcessContext
from app.db.models import EspAccount

parse_crm_webhook: CrmWebhookParser = parse_webhook
read_esp_hook: EspHookReader = read_delivery
# Metric labels of pushes: the email platform and its import call.
ESP_NAME = "unisender"
ESP_IMPORT_CALL = "importContacts"
# Campaign reports come in the platform's own shapes (``app.sync.campaigns`` reads them): with one platform a
# neutral protocol would only rename Unisender's fields. A delivery status as an activity kind (bounces):
esp_delivery_kind = activity_kind


async def crm_client(pc: ProcessContext, account_id: int) -> CrmClient:
    """The account's CRM client (its access token refreshed first when it is about to expire)."""
    return await kommo_client_for(pc, account_id)


async def esp_client(
    session: AsyncSession, pc: ProcessContext, account_id: int
) -> tuple[EmailPlatformClient, EspAccount]:
    """The account's email-platform client and its stored settings (the target list)."""
    return await unisender_client_for(session, pc, account_id)


async def esp_reports_client(
    session: AsyncSession, pc: ProcessContext, account_id: int
) -> tuple[UnisenderClient, EspAccount]:
    """The account's email-platform client with its campaign reads, and its stored settings."""
    return await unisender_client_for(session, pc, account_id)
