"""Pydantic models of Kommo's API v4 wire format (only the parts the connector reads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.connectors.base import CrmContact, CrmFieldDef, CrmFieldValue, CrmUser, OAuthTokens
from app.connectors.kommo.text import clean_text
from app.connectors.kommo.values import DATE_TYPES, date_text, number_text

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
    # An object is legal_entity's value: accepted so one such field cannot fail a whole page, never mapped.
    value: str | int | float | bool | dict[str, Any] | None = None
    enum_id: int | None = None
    enum_code: str | None = None


class KommoCustomFieldValues(KommoModel):
    field_id: int
    field_name: str | None = None
    field_code: str | None = None
    field_type: str | None = None
    # Kommo may send null for no values. A type, not a validator: a Python callback per field of every contact
    # of a page was a noticeable share of a full sync's CPU.
    values: list[KommoFieldValue] | None = None

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


def _null_to_empty(value: Any) -> Any:
    return "" if value is None else value


class KommoContactEmbedded(KommoModel):
    tags: list[KommoTag] | None = None  # null or missing: none


def _value_text(value: str | int | float | bool | dict[str, Any] | None, dated: bool) -> str | None:
    """One REST value as the text a webhook would carry for it (``values.py``); None when it is blank or has
    no text form (null, an object)."""
    if isinstance(value, str):
        text = clean_text(value)
        if dated:
            text = date_text(text)
        return text if text.strip() else None
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "1" if value else "0"
    if isinstance(value, int | float):
        return number_text(value)
    return None


class KommoContact(KommoModel):
    id: int
    # Null names are read as empty (in to_crm_contact).
    name: str | None = ""
    first_name: str | None = ""
    last_name: str | None = ""
    responsible_user_id: int | None = None
    created_at: int | None = None
    updated_at: int
    is_deleted: bool = False
    # Kommo sends null, not [], when a contact has no custom field values.
    custom_fields_values: list[KommoCustomFieldValues] | None = None
    embedded: KommoContactEmbedded = Field(default_factory=KommoContactEmbedded, alias="_embedded")

    def emails(self) -> list[str]:
        """All email values of the contact (cleaned), in Kommo's order, blanks skipped, exact duplicates once."""
        found: list[str] = []
        for field in self.custom_fields_values or ():
            if not field.is_email():
                continue
            for item in field.values or ():
                if isinstance(item.value, str):
                    email = clean_text(item.value).strip()
                    if email and email not in found:
                        found.append(email)
        return found

    def field_values(self) -> list[CrmFieldValue]:
        """Every custom field with a non-blank value, in Kommo's order, values as text (``values.py``)."""
        found: list[CrmFieldValue] = []
        for field in self.custom_fields_values or ():
            dated = field.field_type in DATE_TYPES
            texts: list[str] = []
            for item in field.values or ():
                text = _value_text(item.value, dated)
                if text is not None:
                    texts.append(text)
            if texts:
                found.append(CrmFieldValue(field.field_id, tuple(texts)))
        return found

    def tag_names(self) -> list[str]:
        """Names of the contact's tags (cleaned)."""
        return [clean_text(tag.name) for tag in self.embedded.tags or ()]

    def to_crm_contact(self) -> CrmContact:
        """The provider-neutral view used by the sync engine; its text is cleaned of control characters here,
        at the boundary (``text.clean_text``): here rather than in field validators, because a full sync maps
        every contact of an account and a plain call per field is the cheapest place."""
        return CrmContact(
            id=self.id,
            name=clean_text(self.name or ""),
            updated_at=self.updated_at,
            emails=tuple(self.emails()),
            first_name=clean_text(self.first_name or ""),
            last_name=clean_text(self.last_name or ""),
            tags=tuple(self.tag_names()),
            deleted=self.is_deleted,
            responsible_user_id=self.responsible_user_id,
            created_at=self.created_at,
            fields=tuple(self.field_values()),
        )


class KommoContactsEmbedded(KommoModel):
    contacts: list[KommoContact] = Field(default_factory=list)


class KommoContactList(KommoModel):
    """One page of ``GET /api/v4/contacts``."""

    page: int | None = Field(default=None, alias="_page")
    links: KommoLinks = Field(default_factory=KommoLinks, alias="_links")
    embedded: KommoContactsEmbedded = Field(default_factory=KommoContactsEmbedded, alias="_embedded")


# --- pages of other lists ----------------------------------------------------------------------------------


class KommoPage(KommoModel):
    """What every paged HAL list of Kommo carries besides its items."""

    page: int | None = Field(default=None, alias="_page")
    page_count: int | None = Field(default=None, alias="_page_count")
    total_items: int | None = Field(default=None, alias="_total_items")
    links: KommoLinks = Field(default_factory=KommoLinks, alias="_links")


class KommoFieldEnum(KommoModel):
    id: int | None = None
    value: str = ""
    sort: int | None = None

    _value = field_validator("value", mode="before")(_null_to_empty)


class KommoCustomField(KommoModel):
    """One item of ``GET /api/v4/contacts/custom_fields``."""

    id: int
    name: str = ""
    type: str = ""
    code: str | None = None
    sort: int | None = None
    enums: list[KommoFieldEnum] | None = None  # null for types without options

    _texts = field_validator("name", "type", mode="before")(_null_to_empty)

    def to_field_def(self) -> CrmFieldDef:
        return CrmFieldDef(
            id=self.id,
            name=clean_text(self.name or ""),
            type=self.type,
            code=self.code or None,
            options=tuple(clean_text(e.value) for e in self.enums or ()),
        )


class KommoCustomFieldsEmbedded(KommoModel):
    custom_fields: list[KommoCustomField] = Field(default_factory=list)


class KommoCustomFieldList(KommoPage):
    embedded: KommoCustomFieldsEmbedded = Field(default_factory=KommoCustomFieldsEmbedded, alias="_embedded")

    def items(self) -> list[KommoCustomField]:
        return self.embedded.custom_fields


class KommoUser(KommoModel):
    """One item of ``GET /api/v4/users`` (only what names a user)."""

    id: int
    name: str = ""
    email: str | None = None

    _name = field_validator("name", mode="before")(_null_to_empty)

    def to_user(self) -> CrmUser:
        return CrmUser(id=self.id, name=clean_text(self.name))


class KommoUsersEmbedded(KommoModel):
    users: list[KommoUser] = Field(default_factory=list)


class KommoUserList(KommoPage):
    embedded: KommoUsersEmbedded = Field(default_factory=KommoUsersEmbedded, alias="_embedded")

    def items(self) -> list[KommoUser]:
        return self.embedded.users


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
