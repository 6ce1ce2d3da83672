"""Pydantic models of Kommo's API v4 wire format (only the parts the connector reads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.connectors.base import CrmContact, OAuthTokens
from app.connectors.kommo.text import clean_text

EMAIL_FIELD_CODE = "EMAIL"


class KommoModel(BaseModel):
    """Base: tolerate fields we do not model (Kommo adds keys freely)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class KommoLink(KommoModel):
    href: str


class KommoLinks(KommoModel):
    self_: KommoLink | None = Field(default=None, alias="self")
    next: KommoLink | None = None
    prev: KommoLink | None = None


# --- contacts -----------------------------------------------------------------------------------------------


class KommoFieldValue(KommoModel):
    value: str | int | float | bool | None = None
    enum_id: int | None = None
    enum_code: str | None = None


class KommoCustomFieldValues(KommoModel):
    field_id: int
    field_name: str | None = None
    field_code: str | None = None
    field_type: str | None = None
    values: list[KommoFieldValue] = Field(default_factory=list)

    @field_validator("values", mode="before")
    @classmethod
    def _null_values(cls, value: Any) -> Any:
        return [] if value is None else value

    def is_email(self) -> bool:
        """True for the predefined EMAIL field, or an uncoded multitext field named "Email"."""
        if self.field_code:
            return self.field_code.upper() == EMAIL_FIELD_CODE
        return (self.field_type or "").lower() == "multitext" and (
            self.field_name or ""
        ).strip().casefold() == "email"


class KommoTag(KommoModel):
    id: int | None = None
    name: str
    color: str | None = None


class KommoContactEmbedded(KommoModel):
    tags: list[KommoTag] = Field(default_factory=list)

    @field_validator("tags", mode="before")
    @classmethod
    def _null_tags(cls, value: Any) -> Any:
        return [] if value is None else value


def _null_to_empty(value: Any) -> Any:
    return "" if value is None else value


class KommoContact(KommoModel):
    id: int
    name: str = ""
    first_name: str = ""
    last_name: str = ""
    responsible_user_id: int | None = None
    created_at: int | None = None
    updated_at: int
    is_deleted: bool = False
    # Kommo sends null, not [], when a contact has no custom field values.
    custom_fields_values: list[KommoCustomFieldValues] | None = None
    embedded: KommoContactEmbedded = Field(default_factory=KommoContactEmbedded, alias="_embedded")

    _names = field_validator("name", "first_name", "last_name", mode="before")(_null_to_empty)

    def emails(self) -> list[str]:
        """All email values of the contact (cleaned), in Kommo's order, blanks skipped, exact duplicates once."""
        found: list[str] = []
        for field in self.custom_fields_values or ():
            if not field.is_email():
                continue
            for item in field.values:
                if isinstance(item.value, str):
                    email = clean_text(item.value).strip()
                    if email and email not in found:
                        found.append(email)
        return found

    def tag_names(self) -> list[str]:
        """Names of the contact's tags (cleaned)."""
        return [clean_text(tag.name) for tag in self.embedded.tags]

    def to_crm_contact(self) -> CrmContact:
        """The provider-neutral view used by the sync engine; its text is cleaned of control characters here,
        at the boundary (``text.clean_text``): here rather than in field validators, because a full sync maps
        every contact of an account and a plain call per field is the cheapest place."""
        return CrmContact(
            id=self.id,
            name=clean_text(self.name),
            updated_at=self.updated_at,
            emails=tuple(self.emails()),
            first_name=clean_text(self.first_name),
            last_name=clean_text(self.last_name),
            tags=tuple(self.tag_names()),
            deleted=self.is_deleted,
        )


class KommoContactsEmbedded(KommoModel):
    contacts: list[KommoContact] = Field(default_factory=list)


class KommoContactList(KommoModel):
    """One page of ``GET /api/v4/contacts``."""

    page: int | None = Field(default=None, alias="_page")
    links: KommoLinks = Field(default_factory=KommoLinks, alias="_links")
    embedded: KommoContactsEmbedded = Field(default_factory=KommoContactsEmbedded, alias="_embedded")


# --- OAuth --------------------------------------------------------------------------------------------------


class KommoTokenResponse(KommoModel):
    token_type: str = "Bearer"
    expires_in: int
    access_token: str = Field(min_length=1)
    refresh_token: str = Field(min_length=1)
    server_time: int | None = None

    def to_tokens(self) -> OAuthTokens:
        """The provider-neutral token pair."""
        return OAuthTokens(
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            expires_in=self.expires_in,
            server_time=self.server_time,
        )


# --- webhooks registry ------------------------------------------------------------------------------------


class KommoWebhook(KommoModel):
    id: int | None = None
    destination: str
    created_at: int | None = None
    updated_at: int | None = None
    account_id: int | None = None
    created_by: int | None = None
    sort: int | None = None
    disabled: bool = False
    settings: list[str] = Field(default_factory=list)


class KommoWebhooksEmbedded(KommoModel):
    webhooks: list[KommoWebhook] = Field(default_factory=list)


class KommoWebhookList(KommoModel):
    total_items: int | None = Field(default=None, alias="_total_items")
    embedded: KommoWebhooksEmbedded = Field(default_factory=KommoWebhooksEmbedded, alias="_embedded")


# --- account ------------------------------------------------------------------------------------------------


class KommoAccount(KommoModel):
    id: int
    name: str = ""
    subdomain: str
    created_at: int | None = None
    created_by: int | None = None
    updated_at: int | None = None
    updated_by: int | None = None
    current_user_id: int | None = None
    country: str | None = None
    currency: str | None = None
    currency_symbol: str | None = None
