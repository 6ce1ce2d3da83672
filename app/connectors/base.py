"""Connector protocols: what the sync engine needs from a CRM and from an email platform.

Kommo and Unisender implement these; a HubSpot or Mailchimp connector would too, and nothing in
``app.sync`` would change. The value types here are provider-neutral: each client maps its own typed
wire models onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

# --- CRM side -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrmContact:
    """One CRM contact as the sync engine sees it."""

    id: int
    name: str
    updated_at: int  # unix seconds, the CRM's own version clock for this contact
    emails: tuple[str, ...] = ()  # raw values as the CRM holds them (not yet normalised)
    first_name: str = ""
    last_name: str = ""
    tags: tuple[str, ...] = ()
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class ContactPage:
    contacts: list[CrmContact]
    next_page: int | None  # None when this was the last page


@dataclass(frozen=True, slots=True)
class OAuthTokens:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds from ``server_time``
    server_time: int | None = None  # unix seconds per the provider, when it says


class CrmAction(StrEnum):
    ADD = "add"
    UPDATE = "update"
    DELETE = "delete"
    RESTORE = "restore"


@dataclass(frozen=True, slots=True)
class CrmContactEvent:
    """One contact change carried by a CRM webhook body."""

    action: CrmAction
    contact_id: int
    updated_at: int | None  # None for deletions, which carry no timestamp
    contact: CrmContact | None  # None for deletions


@dataclass(frozen=True, slots=True)
class CrmWebhookBatch:
    account_id: int | None
    subdomain: str | None
    events: list[CrmContactEvent] = field(default_factory=list)
    account_link: str | None = None  # the account's own URL as the body names it (https://acme.kommo.com)


class CrmClient(Protocol):
    """Calls made on behalf of one connected CRM account."""

    async def list_contacts(
        self, *, page: int = 1, limit: int = 250, updated_since: int | None = None
    ) -> ContactPage: ...

    async def get_contacts(self, ids: Sequence[int]) -> list[CrmContact]: ...

    async def add_contact_tags(self, contact_id: int, tags: Sequence[str]) -> None: ...

    async def register_webhook(self, destination: str, events: Sequence[str]) -> None: ...


class CrmWebhookParser(Protocol):
    """Reads a CRM webhook body into contact events; raises ``WebhookParseError`` for a body it refuses."""

    def __call__(self, body: bytes, /) -> CrmWebhookBatch: ...


class CrmOAuth(Protocol):
    """OAuth 2.0 authorization-code flow of a CRM."""

    def authorize_url(self, state: str) -> str: ...

    async def exchange_code(self, code: str) -> OAuthTokens: ...

    async def refresh(self, refresh_token: str) -> OAuthTokens: ...


# --- Email-platform side ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportRow:
    """The desired state of one address in the email platform."""

    email: str
    name: str = ""
    list_ids: tuple[int, ...] = ()
    delete: bool = False
    unsubscribed: bool = False  # set the address unsubscribed (never the reverse)


class RowOutcome(StrEnum):
    OK = "ok"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class RowResult:
    index: int  # position in the batch that was sent
    outcome: RowOutcome
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class EspContact:
    email: str
    status: str
    list_ids: tuple[int, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EspList:
    id: int
    title: str


@dataclass(frozen=True, slots=True)
class EspField:
    id: int
    name: str
    type: str


class EmailPlatformClient(Protocol):
    """Calls made with one email-platform credential."""

    max_import_rows: int

    async def check_credentials(self) -> None: ...

    async def import_contacts(self, rows: Sequence[ImportRow]) -> list[RowResult]: ...

    async def exclude(self, email: str, list_ids: Sequence[int] | None = None) -> None: ...

    async def get_contact(self, email: str) -> EspContact | None: ...

    async def get_lists(self) -> list[EspList]: ...

    async def create_list(self, title: str) -> int: ...

    async def get_fields(self) -> list[EspField]: ...

    async def create_field(self, name: str, type_: str = "string") -> int: ...

    async def set_unsubscribe_hook(self, url: str) -> None: ...

    async def remove_hook(self, url: str) -> None: ...


class EspHookEvent(Protocol):
    """One event of an email platform's hook delivery, as the sync engine reads it."""

    @property
    def email(self) -> str | None: ...  # normalised; None when the event names no readable address

    @property
    def unsubscribes(self) -> bool: ...  # the address no longer takes mail from this account


class EspHookDelivery(Protocol):
    @property
    def events(self) -> Sequence[EspHookEvent]: ...


class EspHookReader(Protocol):
    """Reads a stored hook body; raises ``WebhookParseError`` only for a body that cannot be read at all."""

    def __call__(self, body: bytes, /) -> EspHookDelivery: ...
