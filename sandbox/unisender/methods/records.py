"""Contact values as Unisender reads them (addresses, phones, tags, times) and the contact/membership indexes
every writing method keeps in step."""

from __future__ import annotations

import re
from datetime import datetime

from sandbox.unisender.methods.call import Call
from sandbox.unisender.state import Account, Contact, Membership

_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:"
    + _LABEL
    + r"\.)+[^\W\d_]{2,63}$"
)
# International format: "+" and 10-15 digits (spaces, hyphens and brackets between them are dropped).
_PHONE_RE = re.compile(r"^\+[1-9]\d{9,14}$")


def normalise_email(raw: str) -> str | None:
    """Lower-cased address if it is a valid email, else None."""
    value = raw.strip().lower()
    if len(value) > 254 or "@" not in value or len(value.split("@", 1)[0]) > 64:
        return None
    return value if _EMAIL_RE.match(value) else None


def normalise_phone(raw: str) -> str | None:
    """``+digits`` if it is a number in international format, else None."""
    value = re.sub(r"[\s()-]", "", raw)
    return value if _PHONE_RE.match(value) else None


def split_tags(raw: str) -> list[str]:
    """Comma-separated tag names, without empties and duplicates, order kept."""
    seen: dict[str, None] = {}
    for part in raw.split(","):
        part = part.strip()
        if part:
            seen[part] = None
    return list(seen)


def parse_time(raw: str) -> str | None:
    """A subscribe time in ``YYYY-MM-DD hh:mm:ss`` or ``YYYY-MM-DD``, normalised; None if invalid."""
    raw = raw.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, fmt).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
    return None


def new_contact(call: Call, email: str | None, phone: str | None, status: str) -> Contact:
    """Create and index a contact."""
    account = call.account
    contact = Contact(
        person_id=call.state.new_person_id(),
        email=email,
        phone=phone,
        status=status,
        availability="available",
        phone_status="active",
        phone_availability="available",
        added_at=call.now,
    )
    if email:
        account.contacts_by_email[email] = contact
    if phone:
        account.contacts_by_phone[phone] = contact
    account.contacts_by_id[contact.person_id] = contact
    return contact


def join_list(account: Account, contact: Contact, list_id: int, status: str, added_at: str) -> None:
    """Add or update a membership, keeping the list's member index in step."""
    contact.lists[list_id] = Membership(status=status, added_at=added_at)
    account.lists[list_id].members.add(contact.person_id)


def leave_list(account: Account, contact: Contact, list_id: int) -> None:
    """Remove a membership."""
    contact.lists.pop(list_id, None)
    lst = account.lists.get(list_id)
    if lst is not None:
        lst.members.discard(contact.person_id)
