"""Typed batch writes: contact notes (spec §11), new contacts (§3.4) and contact patches (§3.5, §10), what
``KommoClient.add_notes``, ``add_contacts`` and ``update_contacts`` take and return, and the shapes of
Kommo's answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.connectors.kommo.schemas import KommoModel

# The note types Kommo lets an integration write (its notes-types page); the others are read-only.
NoteType = Literal[
    "common",
    "call_in",
    "call_out",
    "service_message",
    "extended_service_message",
    "geolocation",
    "sms_in",
    "sms_out",
    "attachment",
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoteIn(_Input):
    """One note to add to a contact. ``params`` per type (§11): common ``{text}``; service_message
    ``{service, text}``; call_in/call_out ``{uniq, duration, source, phone, link}``; sms_in/sms_out
    ``{text, phone}``; geolocation ``{text, address, longitude, latitude}``; attachment ``{file_uuid,
    file_name, version_uuid}``. ``request_id`` names it in results and errors (default: its index)."""

    entity_id: int
    note_type: NoteType
    params: dict[str, str | int]
    request_id: str | None = None
    created_by: int | None = None  # Kommo's default: the token's user; 0 = no user (a robot's note)
    responsible_user_id: int | None = None
    created_at: int | None = None

    @classmethod
    def common(cls, entity_id: int, text: str, *, request_id: str | None = None) -> NoteIn:
        return cls(entity_id=entity_id, note_type="common", params={"text": text}, request_id=request_id)

    @classmethod
    def service_message(
        cls, entity_id: int, service: str, text: str, *, request_id: str | None = None
    ) -> NoteIn:
        """A note shown as coming from ``service`` (e.g. "Unisender sync") rather than from a user."""
        return cls(
            entity_id=entity_id,
            note_type="service_message",
            params={"service": service, "text": text},
            request_id=request_id,
        )

    def body(self) -> dict[str, Any]:
        """The JSON item, without ``request_id`` (the batch adds it)."""
        return self.model_dump(exclude_none=True, exclude={"request_id"})


class NoteUpdate(_Input):
    """A new text for a note added before (``PATCH /api/v4/contacts/notes``): ``params`` are replaced whole."""

    id: int
    entity_id: int
    note_type: NoteType
    params: dict[str, str | int]
    request_id: str | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"request_id"})


class NoteCreated(KommoModel):
    id: int
    entity_id: int
    request_id: str


class FieldValuesPatch(_Input):
    """New values of one custom field, named by ``field_id`` or ``field_code``. ``values`` replace the field's
    values (§8.3), in Kommo's write shape (§8.2, e.g. ``{"value": "a@b.c", "enum_code": "WORK"}``); None
    clears the field."""

    field_id: int | None = None
    field_code: str | None = None
    values: list[dict[str, Any]] | None

    @model_validator(mode="after")
    def _one_name(self) -> FieldValuesPatch:
        if (self.field_id is None) == (self.field_code is None):
            raise ValueError("give field_id or field_code, not both")
        return self

    def body(self) -> dict[str, Any]:
        key: dict[str, Any] = (
            {"field_id": self.field_id} if self.field_id is not None else {"field_code": self.field_code}
        )
        return {**key, "values": self.values}  # values: null is sent as such (it clears the field)


class TagName(_Input):
    name: str


class _ContactWrite(_Input):
    """What a created and a changed contact both carry; fields left None are not sent."""

    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    responsible_user_id: int | None = None
    custom_fields_values: list[FieldValuesPatch] | None = None
    tags_to_add: list[TagName] | None = None
    request_id: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON item, without ``request_id`` (the batch adds it)."""
        out = self.model_dump(exclude_none=True, exclude={"request_id", "custom_fields_values"})
        if self.custom_fields_values is not None:
            out["custom_fields_values"] = [f.body() for f in self.custom_fields_values]
        return out


class ContactIn(_ContactWrite):
    """One contact to create (``POST /api/v4/contacts``, §3.4). Kommo has no duplicate control there (§10):
    whoever creates must have looked the address up first."""


class ContactPatch(_ContactWrite):
    """Changes to one contact (Kommo keeps what is not sent)."""

    id: int
    tags_to_delete: list[TagName] | None = None


class ContactUpdated(KommoModel):
    """A contact written (updated, or created: then without ``name`` and ``updated_at``, §3.4)."""

    id: int
    name: str | None = None
    updated_at: int | None = None
    request_id: str


# --- responses ------------------------------------------------------------------------------------------------


class KommoNoteResult(KommoModel):
    id: int
    entity_id: int
    request_id: str | None = None


class KommoContactResult(KommoModel):
    id: int
    name: str | None = None
    updated_at: int | None = None
    request_id: str | None = None


class _NotesEmbedded(KommoModel):
    notes: list[KommoNoteResult]


class _ContactsEmbedded(KommoModel):
    contacts: list[KommoContactResult]


class KommoNotesAdded(KommoModel):
    embedded: _NotesEmbedded = Field(alias="_embedded")


class KommoContactsUpdated(KommoModel):
    embedded: _ContactsEmbedded = Field(alias="_embedded")
