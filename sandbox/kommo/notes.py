"""Contact notes (spec §11): the store, validation of POST/PATCH items, and the read model.

Like contact writes, a batch is validated whole first and applied only if no item has an error; problems are
collected per item (``validation-errors`` keyed by ``request_id``, paths relative to the item).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from .store import Account

ValidationErrors = list[dict[str, Any]]

# Writable note types and their params (spec §11, Kommo's notes-types page): name -> required?. Which params
# are required is not documented; the sandbox requires all but a call's ``link`` and an attachment's
# ``version_uuid`` (the page marks that one optional). ``duration`` is an integer, every other param a string.
NOTE_PARAMS: dict[str, dict[str, bool]] = {
    "common": {"text": True},
    "call_in": {"uniq": True, "duration": True, "source": True, "link": False, "phone": True},
    "call_out": {"uniq": True, "duration": True, "source": True, "link": False, "phone": True},
    "service_message": {"service": True, "text": True},
    "extended_service_message": {"service": True, "text": True},
    "geolocation": {"text": True, "address": True, "longitude": True, "latitude": True},
    "sms_in": {"text": True, "phone": True},
    "sms_out": {"text": True, "phone": True},
    "attachment": {"file_uuid": True, "version_uuid": False, "file_name": True},
}
_INT_PARAMS = frozenset({"duration"})
_INT_KEYS = ("created_by", "responsible_user_id", "created_at", "updated_at")


@dataclass(slots=True)
class Note:
    id: int
    entity_id: int
    note_type: str
    params: dict[str, Any]
    created_by: int
    updated_by: int
    responsible_user_id: int
    created_at: int
    updated_at: int
    group_id: int = 0
    is_pinned: bool = False


@dataclass(slots=True)
class _Item:
    """One validated item, not yet applied."""

    request_id: str
    note: Note | None = None  # PATCH: the note it changes
    entity_id: int | None = None
    note_type: str | None = None
    params: dict[str, Any] | None = None
    scalars: dict[str, int] = field(default_factory=dict)


def _err(code: str, path: str, detail: str) -> dict[str, str]:
    return {"code": code, "path": path, "detail": detail}


def _type_err(path: str, type_name: str) -> dict[str, str]:
    return _err("InvalidType", path, f"This value should be of type {type_name}.")


def _blank(path: str) -> dict[str, str]:
    return _err("NotBlank", path, "This value should not be blank.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class NoteStore:
    """Every account's contact notes, by account id then note id (ids unique across accounts)."""

    def __init__(self) -> None:
        self.by_account: dict[int, dict[int, Note]] = {}
        self._ids = itertools.count(42_709_325)  # the id in the docs' sample answer

    def of(self, account: Account) -> dict[int, Note]:
        return self.by_account.setdefault(account.id, {})

    def visible(self, account: Account, note_id: int, entity_id: int | None = None) -> Note | None:
        """A note the API shows: its contact is live (and is ``entity_id`` when given)."""
        note = self.of(account).get(note_id)
        if note is None or account.live(note.entity_id) is None:
            return None
        return note if entity_id is None or note.entity_id == entity_id else None

    # --- writes -----------------------------------------------------------------------------------------------
    def create(
        self,
        account: Account,
        items: list[Any],
        *,
        now: int,
        max_text: int | None,
        entity_id: int | None = None,
    ) -> tuple[list[Note], list[str], ValidationErrors]:
        """Validate all, then add all (atomic). ``entity_id``: the contact of ``/contacts/{id}/notes`` (it
        overrides the items' own). Returns (notes, request_ids, validation errors)."""
        parsed, failures = self._validate(account, items, entity_id, max_text, update=False)
        if failures:
            return [], [], failures
        made: list[Note] = []
        user = account.current_user_id
        for it in parsed:
            assert it.entity_id is not None
            assert it.note_type is not None
            assert it.params is not None
            s = it.scalars
            created_at = s.get("created_at", now)
            note = Note(
                next(self._ids),
                it.entity_id,
                it.note_type,
                it.params,
                created_by=s.get("created_by", user),
                updated_by=user,
                responsible_user_id=s.get("responsible_user_id", user),
                created_at=created_at,
                updated_at=max(s.get("updated_at", created_at), created_at),
            )
            self.of(account)[note.id] = note
            made.append(note)
        return made, [it.request_id for it in parsed], []

    def update(
        self,
        account: Account,
        items: list[Any],
        *,
        now: int,
        max_text: int | None,
        entity_id: int | None = None,
    ) -> tuple[list[Note], list[str], ValidationErrors]:
        """Validate all, then change all (atomic). A note's ``params`` are replaced as a whole."""
        parsed, failures = self._validate(account, items, entity_id, max_text, update=True)
        if failures:
            return [], [], failures
        changed: list[Note] = []
        for it in parsed:
            note = it.note
            assert note is not None
            if it.note_type is not None:
                note.note_type = it.note_type
            if it.params is not None:
                note.params = it.params
            for key in ("created_by", "responsible_user_id", "created_at"):
                if key in it.scalars:
                    setattr(note, key, it.scalars[key])
            wanted = it.scalars.get("updated_at")
            note.updated_at = (
                wanted if wanted is not None and wanted > note.updated_at else max(now, note.updated_at)
            )
            note.updated_by = account.current_user_id
            changed.append(note)
        return changed, [it.request_id for it in parsed], []

    # --- validation -------------------------------------------------------------------------------------------
    def _validate(
        self, account: Account, items: list[Any], entity_id: int | None, max_text: int | None, *, update: bool
    ) -> tuple[list[_Item], ValidationErrors]:
        parsed: list[_Item] = []
        failures: ValidationErrors = []
        seen: set[int] = set()
        for i, raw in enumerate(items):
            errors: list[dict[str, str]] = []
            it = self._parse(account, raw, str(i), entity_id, max_text, update, errors)
            if update and it.note is not None:
                if it.note.id in seen:
                    errors.append(_err("Duplicate", "id", "This value is already used."))
                seen.add(it.note.id)
            if errors:
                failures.append({"request_id": it.request_id, "errors": errors})
            parsed.append(it)
        return parsed, failures

    def _parse(
        self,
        account: Account,
        raw: Any,
        index: str,
        entity_id: int | None,
        max_text: int | None,
        update: bool,
        errors: list[dict[str, str]],
    ) -> _Item:
        it = _Item(index)
        if not isinstance(raw, dict):
            errors.append(_type_err("", "object"))
            return it
        rid = raw.get("request_id")
        if isinstance(rid, str):
            it.request_id = rid
        elif rid is not None:
            errors.append(_type_err("request_id", "string"))
        if update:
            self._parse_target(account, raw, entity_id, it, errors)
        else:
            self._parse_entity(account, raw, entity_id, it, errors)
        ntype = raw.get("note_type")
        if ntype is None:
            if not update:
                errors.append(_blank("note_type"))
        elif not isinstance(ntype, str):
            errors.append(_type_err("note_type", "string"))
        elif ntype not in NOTE_PARAMS:
            errors.append(
                _err("NotSupportedChoice", "note_type", "The value you selected is not a valid choice.")
            )
        else:
            it.note_type = ntype
        effective = it.note_type or (it.note.note_type if it.note is not None else None)
        params = raw.get("params")
        if params is None:
            if not update or (it.note is not None and it.note_type not in (None, it.note.note_type)):
                errors.append(_blank("params"))
        elif not isinstance(params, dict):
            errors.append(_type_err("params", "object"))
        elif effective in NOTE_PARAMS:
            it.params = _parse_params(effective, params, max_text, errors)
        for key in _INT_KEYS:
            if key in raw:
                if _is_int(raw[key]) and raw[key] >= 0:
                    it.scalars[key] = raw[key]
                else:
                    errors.append(_type_err(key, "int"))
        flag = raw.get("is_need_to_trigger_digital_pipeline")
        if flag is not None and not isinstance(flag, bool):
            errors.append(_type_err("is_need_to_trigger_digital_pipeline", "bool"))
        return it

    @staticmethod
    def _parse_entity(
        account: Account, raw: dict[str, Any], entity_id: int | None, it: _Item, errors: list[dict[str, str]]
    ) -> None:
        eid = entity_id if entity_id is not None else raw.get("entity_id")
        if eid is None:
            errors.append(_blank("entity_id"))
        elif not _is_int(eid):
            errors.append(_type_err("entity_id", "int"))
        elif account.live(eid) is None:
            errors.append(_err("NotFound", "entity_id", "Entity not found"))
        else:
            it.entity_id = eid

    def _parse_target(
        self,
        account: Account,
        raw: dict[str, Any],
        entity_id: int | None,
        it: _Item,
        errors: list[dict[str, str]],
    ) -> None:
        nid = raw.get("id")
        eid = entity_id if entity_id is not None else raw.get("entity_id")
        if eid is not None and not _is_int(eid):
            errors.append(_type_err("entity_id", "int"))
            return
        if nid is None:
            errors.append(_blank("id"))
        elif not _is_int(nid):
            errors.append(_type_err("id", "int"))
        else:
            # Unknown, of another account, on a deleted contact, or not on the entity named: not found.
            it.note = self.visible(account, nid, eid)
            if it.note is None:
                errors.append(_err("NotFound", "id", "Entity not found"))


def _parse_params(
    note_type: str, params: dict[str, Any], max_text: int | None, errors: list[dict[str, str]]
) -> dict[str, Any]:
    """The params of ``note_type`` (unknown keys dropped), checking presence and types."""
    out: dict[str, Any] = {}
    for key, required in NOTE_PARAMS[note_type].items():
        path = f"params.{key}"
        value = params.get(key)
        if value is None or value == "":
            if required:
                errors.append(_blank(path))
            continue
        if key in _INT_PARAMS:
            if not _is_int(value) or value < 0:
                errors.append(_type_err(path, "int"))
                continue
        elif not isinstance(value, str):
            errors.append(_type_err(path, "string"))
            continue
        elif key == "text" and max_text is not None and len(value) > max_text:
            errors.append(
                _err(
                    "TooLong",
                    path,
                    f"This value is too long. It should have {max_text} characters or less.",
                )
            )
            continue
        out[key] = value
    return out


def note_json(account: Account, note: Note, base: str) -> dict[str, Any]:
    """The read model (spec §11), ``_links.self`` under the contact."""
    return {
        "id": note.id,
        "entity_id": note.entity_id,
        "created_by": note.created_by,
        "updated_by": note.updated_by,
        "created_at": note.created_at,
        "updated_at": note.updated_at,
        "responsible_user_id": note.responsible_user_id,
        "group_id": note.group_id,
        "note_type": note.note_type,
        "params": dict(note.params),
        "account_id": account.id,
        "is_pinned": note.is_pinned,
        "_links": {"self": {"href": note_href(base, note)}},
    }


def note_href(base: str, note: Note) -> str:
    return f"{base}/api/v4/contacts/{note.entity_id}/notes/{note.id}"
