"""Service writes of the sync engine through Kommo's batch APIs: notes on contacts' timelines (the provider-
neutral ``CrmNote``: new ones added, earlier ones given a new text) and tags added to contacts. The items
Kommo refuses (a contact deleted meanwhile) are set aside and the others resent, so one bad item never holds
up the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from app.connectors.base import CrmNote, NotesWritten
from app.connectors.kommo.exceptions import KommoBatchRejected
from app.connectors.kommo.writes import ContactPatch, NoteIn, NoteUpdate, TagName

if TYPE_CHECKING:
    from app.connectors.kommo.client import KommoClient


class _Sent(Protocol):
    @property
    def request_id(self) -> str | None: ...


class _Done(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def request_id(self) -> str: ...


_ItemT = TypeVar("_ItemT", bound=_Sent)
_DoneT = TypeVar("_DoneT", bound=_Done)


async def write_service_notes(client: KommoClient, notes: Sequence[CrmNote], *, service: str) -> NotesWritten:
    """Notes shown as coming from ``service``; any error other than a refusal of items is raised as it is
    (with ``progress``: what was written)."""
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
    await setting_refused_aside(adds, client.add_notes, out)
    await setting_refused_aside(updates, client.update_notes, out)
    return out


async def add_tags(client: KommoClient, tags: Mapping[int, Sequence[str]]) -> NotesWritten:
    """Add tags to contacts (their other tags kept) in batch PATCHes: ``written`` maps each contact id (as
    text) to itself, ``refused`` names the contacts Kommo refused."""
    patches = [
        ContactPatch(id=cid, tags_to_add=[TagName(name=t) for t in dict.fromkeys(names)], request_id=str(cid))
        for cid, names in tags.items()
        if names
    ]
    out = NotesWritten({}, {})
    await setting_refused_aside(patches, client.update_contacts, out)
    return out


class _Outcome(Protocol):
    @property
    def written(self) -> dict[str, int]: ...

    @property
    def refused(self) -> dict[str, str]: ...


def _id(done: _Done) -> int:
    return done.id


async def setting_refused_aside(
    items: Sequence[_ItemT],
    write: Callable[[Sequence[_ItemT]], Awaitable[Sequence[_DoneT]]],
    out: _Outcome,
    *,
    value: Callable[[_DoneT], int] = _id,
) -> None:
    """``write`` the items; the ones a 400 names go to ``out.refused`` and the rest are resent (each round
    drops at least one item, so it ends). ``out.written`` maps each written item's request id to ``value``
    of its answer (by default the id Kommo gave it)."""
    pending = list(items)
    for _ in range(len(items) + 1):
        if not pending:
            return
        try:
            done: Sequence[_DoneT] = await write(pending)
        except KommoBatchRejected as exc:
            rejected = set(exc.rejected_request_ids)
            for rid in rejected:
                out.refused[rid] = exc.message[:300]
            done = list(exc.progress.completed) if exc.progress else []
            unsaved = set(exc.progress.unsaved_request_ids) if exc.progress else set()
            pending = [n for n in pending if n.request_id in unsaved and n.request_id not in rejected]
        else:
            pending = []
        for item in done:
            out.written[item.request_id] = value(item)
