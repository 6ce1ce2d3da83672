"""Pydantic models of Kommo's API v4 wire format (only the parts the connector reads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.connectors.base import CrmContact, CrmFieldDef, CrmUser, OAuthTokens
from app.connectors.kommo.pages import contact_of
from app.connectors.text import clean_text


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
    # Kommo may send null for no values.
    values: list[KommoFieldValue] | None = None


class KommoTag(KommoModel):
    id: int | None = None
    name: str
    color: str | None = None


def _null_to_empty(value: Any) -> Any:
    return "" if value is None else value


class KommoContactEmbedded(KommoModel):
    tags: list[KommoTag] | None = None  # null or missing: none


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

    def to_crm_contact(self) -> CrmContact:
        """The provider-neutral view (converted as a page is, ``pages.contact_of``)."""
        return contact_of(self.model_dump(by_alias=True))


class KommoContactsEmbedded(KommoModel):
    contacts: list[KommoContact] = Field(default_factory=list)


class KommoContactList(KommoModel):
    """One page of ``GET /api/v4/contacts``, as validated when it is not in the plain shape ``pages.py``
    reads directly."""

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


class KommoNoteRead(KommoModel):
    """A note as ``GET /api/v4/contacts/notes`` lists it (the parts the service reads back)."""

    id: int
    entity_id: int
    note_type: str = ""
    params: dict[str, Any] = Field(default_factory=dict)


class KommoNotesEmbedded(KommoModel):
    notes: list[KommoNoteRead] = Field(default_factory=list)


class KommoNoteList(KommoPage):
    embedded: KommoNotesEmbedded = Field(default_factory=KommoNotesEmbedded, alias="_embedded")

    def items(self) -> list[KommoNoteRead]:
        return self.embedded.notes


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
