"""In-memory state of the Unisender sandbox: accounts (one per api_key), their lists, fields, tags, contacts."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sandbox.unisender.config import UnisenderSandboxConfig
from sandbox.unisender.limits import FaultPlan, SlidingWindow

if TYPE_CHECKING:
    from sandbox.unisender.campaigns import Campaign

SYSTEM_FIELDS = frozenset(
    {
        "email",
        "email_status",
        "email_availability",
        "email_list_ids",
        "email_subscribe_times",
        "email_unsubscribed_list_ids",
        "email_excluded_list_ids",
        "tags",
        "delete",
        "phone",
        "phone_status",
        "phone_availability",
        "phone_list_ids",
        "phone_subscribe_times",
        "phone_unsubscribed_list_ids",
        "phone_excluded_list_ids",
    }
)


def fmt_time(moment: datetime) -> str:
    """Unisender's UTC timestamp format ``YYYY-MM-DD hh:mm:ss``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@dataclass(slots=True)
class Membership:
    """One contact's membership of one list."""

    status: str  # active | unsubscribed
    added_at: str


@dataclass(slots=True)
class Contact:
    """A contact of one account (email and/or phone channel)."""

    person_id: int
    email: str | None
    phone: str | None
    status: str
    availability: str
    phone_status: str
    phone_availability: str
    added_at: str
    # Keyed by field id so a deleted field's values vanish and a renamed field keeps them.
    fields: dict[int, str] = field(default_factory=dict)
    tags: list[int] = field(default_factory=list)
    lists: dict[int, Membership] = field(default_factory=dict)
    # Campaign activity (getContact include_details, export): last_send_datetime, last_delivery_datetime,
    # last_read_datetime, last_click_datetime.
    activity: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class MailList:
    """A mailing list; ``members`` indexes contacts by person_id so list operations never scan the account."""

    id: int
    title: str
    before_subscribe_url: str = ""
    after_subscribe_url: str = ""
    members: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Field:
    """A user-defined contact field."""

    id: int
    name: str
    public_name: str
    type: str
    is_visible: int = 1
    view_pos: int = 1


@dataclass
class Hook:
    """A registered event hook (identified by its URL)."""

    url: str
    events: dict[str, str]  # event name → status filter ("*": every status)
    event_format: str
    max_parallel: int
    single_event: bool
    status: str  # active | stopped
    semaphore: asyncio.Semaphore | None = None

    def as_json(self) -> dict[str, Any]:
        """Control-API view of the hook."""
        return {
            "hook_url": self.url,
            "events": self.events,
            "event_format": self.event_format,
            "max_parallel": self.max_parallel,
            "single_event": int(self.single_event),
            "status": self.status,
        }


@dataclass
class Account:
    """Everything that belongs to one api_key."""

    api_key: str
    login: str
    access_denied: bool = False
    denied_methods: set[str] = field(default_factory=set)
    contacts_by_email: dict[str, Contact] = field(default_factory=dict)
    contacts_by_phone: dict[str, Contact] = field(default_factory=dict)
    contacts_by_id: dict[int, Contact] = field(default_factory=dict)
    lists: dict[int, MailList] = field(default_factory=dict)
    fields: dict[int, Field] = field(default_factory=dict)
    fields_by_name: dict[str, Field] = field(default_factory=dict)
    next_field_id: int = 2
    tags: dict[int, str] = field(default_factory=dict)
    next_tag_id: int = 1
    tags_by_name: dict[str, int] = field(default_factory=dict)
    hooks: dict[str, Hook] = field(default_factory=dict)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    ledger_by_email: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    import_calls: int = 0
    campaigns: dict[int, Campaign] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = Field(id=1, name="Name", public_name="Имя", type="string")
        self.fields[1] = name
        self.fields_by_name["Name"] = name

    def find(self, email: str | None, phone: str | None) -> Contact | None:
        """The contact owning ``email`` (preferred) or ``phone``."""
        if email and email in self.contacts_by_email:
            return self.contacts_by_email[email]
        if phone and phone in self.contacts_by_phone:
            return self.contacts_by_phone[phone]
        return None

    def remove_contact(self, contact: Contact) -> None:
        """Delete a contact and its index entries."""
        if contact.email:
            self.contacts_by_email.pop(contact.email, None)
        if contact.phone:
            self.contacts_by_phone.pop(contact.phone, None)
        self.contacts_by_id.pop(contact.person_id, None)
        for list_id in contact.lists:
            lst = self.lists.get(list_id)
            if lst is not None:
                lst.members.discard(contact.person_id)

    def tag_id(self, name: str) -> int:
        """Id of tag ``name``, created on first use (tag ids are per account)."""
        existing = self.tags_by_name.get(name)
        if existing is not None:
            return existing
        new_id = self.next_tag_id
        self.next_tag_id += 1
        self.tags[new_id] = name
        self.tags_by_name[name] = new_id
        return new_id

    def tag_names(self, contact: Contact) -> list[str]:
        """The contact's tag names (tags deleted from the account are gone)."""
        return [self.tags[t] for t in contact.tags if t in self.tags]

    def field_values(self, contact: Contact) -> dict[str, str]:
        """The contact's user-field values by current field name."""
        return {self.fields[fid].name: v for fid, v in contact.fields.items() if fid in self.fields}

    def contact_json(self, contact: Contact) -> dict[str, Any]:
        """Control-API view of a contact."""
        return {
            "person_id": contact.person_id,
            "email": contact.email,
            "phone": contact.phone,
            "status": contact.status,
            "availability": contact.availability,
            "phone_status": contact.phone_status if contact.phone else None,
            "added_at": contact.added_at,
            "fields": self.field_values(contact),
            "tags": self.tag_names(contact),
            "lists": {
                str(lid): {"status": m.status, "added_at": m.added_at} for lid, m in contact.lists.items()
            },
        }


@dataclass
class CallStats:
    """Per-method call counters (all accounts and per account) and error-code counters."""

    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_account: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    faults: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_json(self) -> dict[str, Any]:
        """Control-API view."""
        return {
            "calls": dict(self.calls),
            "total_calls": sum(self.calls.values()),
            "errors": dict(self.errors),
            "faults": dict(self.faults),
            "by_account": {k: dict(v) for k, v in self.by_account.items()},
        }


class SandboxState:
    """All sandbox state of one app instance (``app.state.unisender``)."""

    def __init__(self, config: UnisenderSandboxConfig) -> None:
        self.config = config
        self.accounts: dict[str, Account] = {}
        self.stats = CallStats()
        self.deliveries: list[dict[str, Any]] = []
        self.exports: dict[str, dict[str, Any]] = {}
        self.faults: FaultPlan | None = None
        self.key_window = SlidingWindow(config.rate_window_seconds)
        self.ip_window = SlidingWindow(config.rate_window_seconds)
        self.method_window = SlidingWindow(config.rate_window_seconds)
        self.next_list_id = 101
        self.next_person_id = 1
        self.next_campaign_id = 5001
        self.reset()

    def reset(self) -> None:
        """Forget everything and re-create the configured accounts."""
        self.accounts.clear()
        self.stats = CallStats()
        self.deliveries.clear()
        self.exports.clear()
        self.faults = None
        self.key_window.clear()
        self.ip_window.clear()
        self.method_window.clear()
        self.next_list_id = 101
        self.next_person_id = 1
        self.next_campaign_id = 5001
        for api_key, login in self.config.accounts.items():
            self.create_account(api_key, login)

    def now(self) -> str:
        """Current sandbox time in Unisender's format."""
        return fmt_time(self.config.clock())

    def create_account(self, api_key: str | None = None, login: str | None = None) -> Account:
        """Create an account; a random key and a login derived from it when not given."""
        key = api_key or secrets.token_hex(16)
        if key in self.accounts:
            raise KeyError(key)
        account = Account(api_key=key, login=login or f"user_{key[:8]}")
        self.accounts[key] = account
        return account

    def new_person_id(self) -> int:
        """A globally unique contact id."""
        pid = self.next_person_id
        self.next_person_id += 1
        return pid

    def new_list_id(self) -> int:
        """A globally unique list id."""
        lid = self.next_list_id
        self.next_list_id += 1
        return lid

    def new_campaign_id(self) -> int:
        """A globally unique campaign id."""
        cid = self.next_campaign_id
        self.next_campaign_id += 1
        return cid
