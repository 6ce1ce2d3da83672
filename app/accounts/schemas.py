"""Request and response bodies of the accounts endpoints (no secret is ever part of a response model)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.db.states import IntegrationStatus

Subdomain = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,63}$")]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class IntegrationIn(BaseModel):
    """``POST /integration``: the Kommo integration's credentials for one account."""

    model_config = ConfigDict(extra="forbid")

    account_id: int = Field(gt=0, strict=True, description="Kommo account id")
    subdomain: Subdomain
    client_id: NonEmpty
    client_secret: NonEmpty
    redirect_uri: str = Field(max_length=2000)

    @field_validator("redirect_uri")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError("must be an http or https URL") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError("must be an http or https URL")
        return value


class IntegrationOut(BaseModel):
    account_id: int
    status: IntegrationStatus
    auth_url: str
    webhook_url: str


class UnisenderIn(BaseModel):
    """``POST /integration/{account_id}/unisender`` and ``POST /widget/key``."""

    model_config = ConfigDict(extra="forbid")

    api_key: NonEmpty
    list_id: int | None = Field(None, gt=0, strict=True)


class UnisenderOut(BaseModel):
    account_id: int
    provider: Literal["unisender"] = "unisender"
    list_id: int
    hook_url_registered: bool


class RotatedTokenOut(BaseModel):
    account_id: int
    webhook_url: str = Field(description="Kommo's webhook URL with the new token (the old one is refused)")
    kommo_webhooks_registered: bool | None = Field(
        description="Kommo's webhooks now point at the new URL (the old destination was deleted); false: "
        "Kommo failed, the webhook cron registers them later; null: Kommo is not connected"
    )
    unisender_hook_registered: bool | None = Field(
        description="Unisender's unsubscribe hook moved to the new URL; null: no Unisender key connected"
    )


class DisableOut(BaseModel):
    status: Literal[IntegrationStatus.DISABLED] = IntegrationStatus.DISABLED


class KommoView(BaseModel):
    connected: bool
    token_expires_at: datetime | None
    needs_reauth: bool
    webhooks_registered: bool


class UnisenderView(BaseModel):
    connected: bool
    list_id: int | None
    checked_at: datetime | None
    hook_registered: bool


class OutboxView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    pending: int = 0
    rejected: int = 0
    dead: int = 0


class RejectionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    email: str
    code: str | None
    message: str | None
    at: datetime


class EventFailureView(BaseModel):
    """A webhook event given up on after repeated failures (the account's other events went on)."""

    model_config = ConfigDict(from_attributes=True)

    event_id: int
    attempts: int
    reason: str | None
    received_at: datetime
    failed_at: datetime | None


class AccountView(BaseModel):
    account_id: int
    subdomain: str
    host: str | None = Field(
        description="The account's host (acme.kommo.com, acme.amocrm.ru); null until connected"
    )
    status: IntegrationStatus
    kommo: KommoView
    unisender: UnisenderView
    outbox: OutboxView
    events_pending: int
    events_failed: int = 0
    recent_event_failures: list[EventFailureView] = []
    last_event_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    recent_rejections: list[RejectionView]
    signups: dict[str, int] = Field(
        default_factory=dict,
        description="Newsletter signups by state: pending, created, linked, recorded, failed (absent: none)",
    )
