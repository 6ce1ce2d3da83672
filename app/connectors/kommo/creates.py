"""Contacts the service creates (``CrmNewContact``, a newsletter signup) and the look-up by address that must
come first: Kommo has no duplicate control on ``POST /api/v4/contacts`` (spec §10), so two POSTs with one
address make two contacts. Items Kommo refuses are set aside and the others still created, as notes are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from app.connectors.base import ContactsCreated, CrmNewContact
from app.connectors.kommo.exceptions import KommoBatchRejected
from app.connectors.kommo.writes import ContactIn, FieldValuesPatch, TagName

if TYPE_CHECKING:
    from app.connectors.kommo.client import KommoClient

log = structlog.get_logger(__name__)

# ``query`` is a substring search over every filled field (§3.1): an address can match others that contain
# it (ann@x.io in joann@x.io). Four pages of 250 is far more than one address plausibly matches.
MAX_SEARCH_PAGES = 4


async def contact_ids_by_email(client: KommoClient, email: str) -> list[int]:
    """Live contacts holding ``email`` in a field (compared trimmed and lower-cased), lowest id first."""
    wanted = email.strip().lower()
    found: set[int] = set()
    page: int | None = 1
    for _ in range(MAX_SEARCH_PAGES):
        if page is None:
            break
        result = await client.list_contacts(page=page, query=wanted)
        for contact in result.contacts:
            if not contact.deleted and any(e.strip().lower() == wanted for e in contact.emails):
                found.add(contact.id)
        page = result.next_page
    else:
        if page is not None:
            log.warning("kommo.search_truncated", pages=MAX_SEARCH_PAGES)
    return sorted(found)


def contact_in(new: CrmNewContact) -> ContactIn:
    """The ``POST`` item: the address in the EMAIL field (WORK), the names only when given (Kommo composes
    ``name`` from the first and last names otherwise, §9), tags by name (a new name creates the tag, §9.2)."""
    values = [FieldValuesPatch(field_code="EMAIL", values=[{"value": new.email, "enum_code": "WORK"}])]
    values += [
        FieldValuesPatch(field_id=f.field_id, values=[{"value": v} for v in f.values])
        for f in new.fields
        if f.values
    ]
    return ContactIn(
        name=new.name or None,
        first_name=new.first_name or None,
        last_name=new.last_name or None,
        custom_fields_values=values,
        tags_to_add=[TagName(name=t) for t in dict.fromkeys(new.tags) if t] or None,
        request_id=new.email,
    )


async def create_contacts(client: KommoClient, contacts: Sequence[CrmNewContact]) -> ContactsCreated:
    """Create ``contacts`` (one address each); an item Kommo refuses (400 naming it) is reported and the rest
    sent again. Any other error is raised as it is: a timeout or 5xx may have created some, which the
    caller's look-up before its next attempt finds."""
    if len({c.email for c in contacts}) != len(contacts):
        raise ValueError("one new contact per address")
    out = ContactsCreated({}, {})
    pending = [contact_in(c) for c in contacts]
    for _ in range(len(contacts) + 1):  # each round drops at least one refused item
        if not pending:
            break
        try:
            done = await client.add_contacts(pending)
        except KommoBatchRejected as exc:
            rejected = set(exc.rejected_request_ids)
            out.refused.update(dict.fromkeys(rejected, exc.message[:300]))
            done = list(exc.progress.completed) if exc.progress else []
            unsaved = set(exc.progress.unsaved_request_ids) if exc.progress else set()
            pending = [c for c in pending if c.request_id in unsaved and c.request_id not in rejected]
        else:
            pending = []
        out.created.update({c.request_id: c.id for c in done})
    return out
