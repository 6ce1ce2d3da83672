"""New values of contacts' stored fields (the provider-neutral ``CrmFieldWrite``) written through
``PATCH /api/v4/contacts``: one patch per contact, the items Kommo refuses set aside so that the others are
still written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.connectors.base import CrmFieldWrite, CrmValue, FieldsWritten
from app.connectors.kommo.notes import setting_refused_aside
from app.connectors.kommo.writes import ContactPatch, ContactUpdated, FieldValuesPatch

if TYPE_CHECKING:
    from app.connectors.kommo.client import KommoClient

_ATTRIBUTES = frozenset({"name", "first_name", "last_name"})


def _values(value: CrmValue) -> list[dict[str, Any]] | None:
    # Every writable type takes {"value": v} (§8.2): an option by its text, a date as unix seconds.
    return None if value is None else [{"value": value}]


def contact_patch(write: CrmFieldWrite) -> ContactPatch:
    """The patch of one contact; raises ValueError for an attribute Kommo has no such name for."""
    attributes = dict(write.attributes)
    unknown = set(attributes) - _ATTRIBUTES
    if unknown:
        raise ValueError(f"not a contact attribute: {sorted(unknown)}")
    fields = [FieldValuesPatch(field_id=fid, values=_values(value)) for fid, value in write.fields]
    return ContactPatch(
        id=write.contact_id,
        custom_fields_values=fields or None,
        request_id=write.key,
        **attributes,
    )


async def write_contact_fields(client: KommoClient, writes: Sequence[CrmFieldWrite]) -> FieldsWritten:
    """Items Kommo refuses are reported and the rest resent; any other error is raised as it is (with
    ``progress``: what was written), and the caller sends the whole set again (writing a value twice is
    harmless)."""
    out = FieldsWritten({}, {})
    patches = [contact_patch(w) for w in writes]
    await setting_refused_aside(patches, client.update_contacts, out, value=_version)
    return out


def _version(done: ContactUpdated) -> int:
    return done.updated_at or 0
