"""Connector protocols: what the sync engine needs from a CRM and from an email platform.

Kommo and Unisender implement these; a HubSpot or Mailchimp connector would too, and nothing in
``app.sync`` would change. The value types here are provider-neutral: each client maps its own typed
wire models onto them.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

# --- CRM side -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrmFieldValue:
    """The values of one custom field of a contact, as text, the same whether read by REST or by webhook:
    an option (select, radiobutton, multiselect, multitext enum) is its text, a date/date_time/birthday is
    unix seconds in decimal, a checkbox is ``"1"`` or ``"0"``, a number is its decimal text; blanks dropped.
    One exception: a channel that cannot tell a date from a text (a value without its field's type, written
    ``dd.mm.yyyy``) keeps the text as it came, since it may be a text field's; whoever knows the field is a
    date reads it with ``day_month_year_seconds``."""

    field_id: int
    values: tuple[str, ...]


_DAY_MONTH_YEAR = re.compile(r"([0-9]{2})\.([0-9]{2})\.([0-9]{4})")


def day_month_year_seconds(text: str) -> str | None:
    """``15.06.2016`` (how CRMs write a day in many locales, and Kommo's old birthday values) → unix seconds
    of that day's UTC midnight, as text; None for anything else, an impossible date included."""
    match = _DAY_MONTH_YEAR.fullmatch(text)
    if match is None:
        return None
    day, month, year = (int(part) for part in match.groups())
    try:
        datetime(year, month, day)  # validates the calendar date; timegm alone would roll 31.02 over
    except ValueError:
        return None
    return str(calendar.timegm((year, month, day, 0, 0, 0)))


@dataclass(frozen=True, slots=True)
class CrmContact:
    """One CRM contact as the sync engine sees it."""

    id: int
    name: str
    updated_at: int  # unix seconds, the CRM's own version clock for this contact
    emails: tuple[str, ...] = ()  # raw values as the CRM holds them (not yet normalised)
    # None: the source does not carry them (Kommo's webhooks do not): the ones read last stay.
    first_name: str | None = ""
    last_name: str | None = ""
    tags: tuple[str, ...] = ()
    deleted: bool = False
    responsible_user_id: int | None = None
    created_at: int | None = None  # unix seconds
    # Every custom field with a value, the key address field included, in the CRM's order.
    fields: tuple[CrmFieldValue, ...] = ()


@dataclass(frozen=True, slots=True)
class CrmFieldDef:
    """A contact custom-field definition of one CRM account."""

    id: int
    name: str
    type: str  # the CRM's type name (text, numeric, checkbox, select, multiselect, date, multitext, …)
    code: str | None = None  # predefined and API-created fields have one (EMAIL, PHONE, POSITION)
    options: tuple[str, ...] = ()  # the option texts of enum types


@dataclass(frozen=True, slots=True)
class CrmUser:
    id: int
    name: str


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


@dataclass(frozen=True, slots=True)
class CrmNote:
    """A note on a contact's timeline written by the service (not by a user): a new one, or (``note_id``
    set) a new text for one written before. ``key`` names it in the results (unique within one call)."""

    contact_id: int
    text: str
    key: str
    note_id: int | None = None


@dataclass(frozen=True, slots=True)
class NotesWritten:
    written: dict[str, int]  # key → the note's id
    refused: dict[str, str]  # key → why the CRM refused it (e.g. the contact was deleted meanwhile)


@dataclass(frozen=True, slots=True)
class CrmNewContact:
    """A contact the service creates (a newsletter signup no contact held): its address, names, tags and
    custom-field values as text. ``email`` also names it in the results (unique within one call)."""

    email: str
    name: str = ""
    first_name: str = ""
    last_name: str = ""
    tags: tuple[str, ...] = ()
    fields: tuple[CrmFieldValue, ...] = ()


@dataclass(frozen=True, slots=True)
class ContactsCreated:
    created: dict[str, int]  # email → the new contact's id
    refused: dict[str, str]  # email → why the CRM refused it


# A value of a CRM field as written: text (an option by its text), number, checkbox, unix seconds; None clears.
CrmValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class CrmFieldWrite:
    """New values of one contact's stored fields, each already of the CRM field's type: ``attributes`` by name
    (``name``, ``first_name``, ``last_name``), ``fields`` by custom-field id. ``key`` names it in the results
    (unique within one call)."""

    contact_id: int
    key: str
    attributes: tuple[tuple[str, str], ...] = ()
    fields: tuple[tuple[int, CrmValue], ...] = ()


@dataclass(frozen=True, slots=True)
class FieldsWritten:
    written: dict[
        str, int
    ]  # key → the contact's new version time (unix seconds; 0 when the CRM does not say)
    refused: dict[str, str]  # key → why the CRM refused it (a deleted contact, an unknown option)


class CrmClient(Protocol):
    """Calls made on behalf of one connected CRM account."""

    async def write_notes(self, notes: Sequence[CrmNote], *, service: str) -> NotesWritten: ...

    # The service notes from ``service`` updated since ``since`` (Unix seconds): (contact id, text) → note id.
    async def find_service_notes(self, *, service: str, since: int) -> dict[tuple[int, str], int]: ...

    # Tags added to contacts in batches (their other tags kept); written/refused keyed by the contact id as text.
    async def add_tags(self, tags: Mapping[int, Sequence[str]]) -> NotesWritten: ...

    async def write_contact_fields(self, writes: Sequence[CrmFieldWrite]) -> FieldsWritten: ...

    # The CRM may have no duplicate control (Kommo has none): look an address up before creating it.
    async def find_contact_ids_by_email(self, email: str) -> list[int]: ...

    async def create_contacts(self, contacts: Sequence[CrmNewContact]) -> ContactsCreated: ...

    async def list_contacts(
        self, *, page: int = 1, limit: int = 250, updated_since: int | None = None
    ) -> ContactPage: ...

    async def get_contacts(self, ids: Sequence[int]) -> list[CrmContact]: ...

    async def add_contact_tags(self, contact_id: int, tags: Sequence[str]) -> None: ...

    async def get_custom_fields(self) -> list[CrmFieldDef]: ...

    async def get_users(self) -> list[CrmUser]: ...

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
    """The desired state of one address in the email platform.

    ``fields`` are user-field cells by the platform's field name; an empty value clears that field. Rows
    carrying different field names, or a phone, go in separate calls (a column never reaches a row that did
    not ask for it). Lists not named in any of the three list tuples are left as they are.
    """

    email: str
    fields: tuple[tuple[str, str], ...] = ()
    list_ids: tuple[int, ...] = ()  # join (an unsubscribed membership stays unsubscribed)
    excluded_list_ids: tuple[int, ...] = ()  # leave, without an unsubscribe mark
    unsubscribed_list_ids: tuple[int, ...] = ()  # keep marked unsubscribed
    phone: str = ""  # the phone channel, international format; empty: not sent
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
    reserved_field_names: frozenset[str]  # column names no user field may take (lower case)

    async def check_credentials(self) -> None: ...

    async def import_contacts(self, rows: Sequence[ImportRow]) -> list[RowResult]: ...

    async def exclude(self, email: str, list_ids: Sequence[int] | None = None) -> None: ...

    async def get_contact(self, email: str) -> EspContact | None: ...

    async def get_lists(self) -> list[EspList]: ...

    async def create_list(self, title: str) -> int: ...

    async def get_fields(self) -> list[EspField]: ...

    async def create_field(self, name: str, type_: str = "string") -> int: ...

    async def set_unsubscribe_hook(self, url: str, *, extra_events: Sequence[str] = ()) -> None: ...

    async def remove_hook(self, url: str) -> None: ...

    # Every address of ``list_id`` with these user fields (name → text): what the platform holds now.
    async def export_field_values(self, list_id: int, names: Sequence[str]) -> dict[str, dict[str, str]]: ...


class ActivityKind(StrEnum):
    """What happened to a letter sent to an address, as the sync engine records it (each platform maps its
    own delivery statuses onto these)."""

    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    SOFT_BOUNCE = "soft_bounce"  # a temporary failure: the platform tries again
    HARD_BOUNCE = "hard_bounce"  # the address cannot receive mail: we stop pushing it
    COMPLAINED = "complained"  # marked as spam by the recipient: we stop pushing it
    UNSUBSCRIBED = "unsubscribed"


class EspHookEvent(Protocol):
    """One event of an email platform's hook delivery, as the sync engine reads it."""

    @property
    def activity(self) -> ActivityKind | None: ...  # what the event says happened to a letter, if anything

    @property
    def campaign_id(self) -> int | None: ...  # the campaign of that letter, when the event names it

    @property
    def status(self) -> str | None: ...  # the platform's own word for it (kept as it came)

    @property
    def time(self) -> datetime | None: ...  # when it happened (UTC), when the event says

    @property
    def email(self) -> str | None: ...  # normalised; None when the event names no readable address

    @property
    def unsubscribes(self) -> bool: ...  # the address no longer takes mail from this account

    @property
    def unsubscribed_lists(self) -> tuple[int, ...]: ...  # the lists an unsubscribe names (none: everything)

    @property
    def field_values(self) -> Mapping[str, str]: ...  # user fields changed in the platform: name → new text

    @property
    def subscribed_lists(self) -> tuple[int, ...]: ...  # the lists the address joined (a subscribe event)


class EspHookDelivery(Protocol):
    @property
    def events(self) -> Sequence[EspHookEvent]: ...


class EspHookReader(Protocol):
    """Reads a stored hook body; raises ``WebhookParseError`` only for a body that cannot be read at all."""

    def __call__(self, body: bytes, /) -> EspHookDelivery: ...
