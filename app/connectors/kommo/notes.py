"""Service notes on contacts' timelines (the provider-neutral ``CrmNote``) written through the notes API:
new ones added, earlier ones given a new text, and the items Kommo refuses set aside so that the others are
still written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from app.connectors.base import CrmNote, NotesWritten
from app.connectors.kommo.exceptions import KommoBatchRejected
from app.connectors.kommo.writes import NoteCreated, NoteIn, NoteUpdate

if TYPE_CHECKING:
    from app.connectors.kommo.client import KommoClient

_NoteT = TypeVar("_NoteT", NoteIn, NoteUpdate)


async def write_service_notes(client: KommoClient, notes: Sequence[CrmNote], *, service: str) -> NotesWritten:
    """Items Kommo refuses (a contact deleted meanwhile) are reported and the rest resent, so one bad item
    never holds up the others; any other error is raised as it is (with ``progress``: what was written)."""
    out = NotesWritten({}, {})
    adds = [
        NoteIn.service_message(n.contact_id, service, n.text, request_id=n.key)
        for n in notes
        if n.note_id is None
    ]
    updates = [
        NoteUpdate(
            id=n.note_id,
            entity_id=n.contact_id,
            note_type="service_message",
            params={"service": service, "text": n.text},
            request_id=n.key,
        )
        for n in notes
        if n.note_id is not None
    ]
    await _refusing(adds, client.add_notes, out)
    await _refusing(updates, client.update_notes, out)
    return out


async def _refusing(
    items: Sequence[_NoteT],
    write: Callable[[Sequence[_NoteT]], Awaitable[list[NoteCreated]]],
    out: NotesWritten,
) -> None:
    pending = list(items)
    for _ in range(len(items) + 1):  # each round drops at least one refused item
        if not pending:
            return
        try:
            done = await write(pending)
        except KommoBatchRejected as exc:
            rejected = set(exc.rejected_request_ids)
            for rid in rejected:
                out.refused[rid] = exc.message[:300]
            done = list(exc.progress.completed) if exc.progress else []
            unsaved = set(exc.progress.unsaved_request_ids) if exc.progress else set()
            pending = [n for n in pending if n.request_id in unsaved and n.request_id not in rejected]
        else:
            pending = []
        for note in done:
            out.written[note.request_id] = note.id
