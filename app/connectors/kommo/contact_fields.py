"""New values of contacts' stored fields (the provider-neutral ``CrmFieldWrite``) written through
``PATCH /api/v4/contacts``: one patch per contact, the items Kommo refuses set aside so that the others are
still written (as ``notes.py`` does for notes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.connectors.base import CrmFieldWrite, CrmValue, FieldsWritten
from app.connectors.kommo.exceptions import KommoBatchRejected
from app.connectors.kommo.writes import ContactPatch, FieldValuesPatch

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
    pending = [contact_patch(w) for w in writes]
    for _ in range(len(writes) + 1):  # each round drops at least one refused item
        if not pending:
            break
        try:
            done = await client.update_contacts(pending)
        except KommoBatchRejected as exc:
            rejected = set(exc.rejected_request_ids)
            for rid in rejected:
                out.refused[rid] = exc.message[:300]
            done = list(exc.progress.completed) if exc.progress else []
            unsaved = set(exc.progress.unsaved_request_ids) if exc.progress else set()
            pending = [p for p in pending if p.request_id in unsaved and p.request_id not in rejected]
        else:
            pending = []
        for item in done:
            out.written[item.request_id] = item.updated_at or 0
    return out
