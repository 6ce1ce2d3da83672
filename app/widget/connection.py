"""What the widget's settings modal shows: the account's Unisender connection and the lists to pick from."""

from __future__ import annotations

from datetime import datetime

import structlog
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as repo
from app.accounts.unisender import unisender_client_for
from app.connectors.unisender.exceptions import UnisenderError, masked
from app.context import ProcessContext
from app.db.models import Integration

log = structlog.get_logger(__name__)


class WidgetList(BaseModel):
    id: int
    title: str


class WidgetConnectionOut(BaseModel):
    account_id: int
    connected: bool = Field(description="A Unisender key is stored for the account")
    list_id: int | None = Field(description="The list contacts are mirrored to")
    hook_registered: bool
    checked_at: datetime | None
    last_error: str | None = Field(description="The last Unisender problem recorded for the account")
    lists: list[WidgetList] = Field(description="The Unisender account's lists (empty when not connected)")
    lists_error: str | None = Field(description="Unisender's reason when the lists could not be read")


async def widget_connection(
    *, session: AsyncSession, pc: ProcessContext, integration: Integration
) -> WidgetConnectionOut:
    """The account's Unisender state and, with its stored key, its lists (one getLists call)."""
    account_id = integration.account_id
    esp = await repo.get_esp_account(session, account_id)
    if esp is None:
        return WidgetConnectionOut(
            account_id=account_id,
            connected=False,
            list_id=None,
            hook_registered=False,
            checked_at=None,
            last_error=None,
            lists=[],
            lists_error=None,
        )
    client, esp = await unisender_client_for(session, pc, account_id)
    lists: list[WidgetList] = []
    lists_error: str | None = None
    try:
        lists = [WidgetList(id=item.id, title=item.title) for item in await client.get_lists()]
    except UnisenderError as exc:
        # Unisender's code and its own words, masked like every error shown to people: never the key.
        log.info("widget.lists_failed", account_id=account_id, code=exc.code)
        lists_error = exc.code or "unisender_error"
        if exc.reason:
            lists_error += f": {masked(exc.reason)}"
    return WidgetConnectionOut(
        account_id=account_id,
        connected=True,
        list_id=esp.list_id,
        hook_registered=esp.hook_registered_at is not None,
        checked_at=esp.checked_at,
        last_error=masked(esp.last_error, 1000) if esp.last_error else None,
        lists=lists,
        lists_error=lists_error,
    )
