"""Typed models of Unisender API results (the ``result`` member of a success envelope)."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

# Log levels Unisender might attach to an import log entry; everything else counts as an error.
_WARNING_LEVELS = frozenset({"warning", "warn", "notice", "info"})


class _Lenient(BaseModel):
    """Unisender adds members over time ("other fields may be added"): ignore unknown ones."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ImportLogEntry(_Lenient):
    """One ``log`` entry of importContacts: a problem with row ``index`` of the batch."""

    index: int | None = None
    code: str = ""
    message: str = ""
    level: str | None = Field(default=None, validation_alias=AliasChoices("level", "type", "severity"))

    @field_validator("index", mode="before")
    @classmethod
    def _index(cls, value: Any) -> int | None:
        # Documented as an integer, seen as a string ("2") in the wild; anything else cannot be mapped.
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().isdecimal():
            return int(value.strip())
        return None

    @field_validator("code", "message", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> str | None:
        return None if value is None else str(value).strip().lower()

    @property
    def is_error(self) -> bool:
        """True unless the entry says it is only a warning (unknown entries count as errors)."""
        return self.level not in _WARNING_LEVELS


class ImportResult(_Lenient):
    """The result of one importContacts call."""

    total: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    new_emails: int = 0
    invalid: int = 0
    log: list[ImportLogEntry] = Field(default_factory=list)

    @field_validator("log", mode="before")
    @classmethod
    def _log(cls, value: Any) -> Any:
        # PHP renders an empty array as [] and may render null or {} for "no entries".
        if value is None or value == {}:
            return []
        return value


class ContactEmail(_Lenient):
    email: str
    status: str = ""
    availability: str | None = None
    added_at: str | None = None


class ContactListMembership(_Lenient):
    id: int
    status: str | None = None
    added_at: str | None = None


def _empty_to(value: Any, empty: Any) -> Any:
    # PHP's json_encode turns an empty associative array into [] and an empty list may come as {} or null.
    if value is None or value == [] or value == {}:
        return empty
    return value


class ContactResult(_Lenient):
    """The result of getContact (``lists``/``fields`` top-level, or nested in ``email`` as one client saw)."""

    email: ContactEmail
    lists: list[ContactListMembership] = Field(default_factory=list)
    fields: dict[str, str] = Field(default_factory=dict)

    @field_validator("lists", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _empty_to(value, [])

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, value: Any) -> Any:
        value = _empty_to(value, {})
        if isinstance(value, dict):
            # All user-field values are stored as text; null means "not set".
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value

    @classmethod
    def from_result(cls, result: Any) -> ContactResult:
        """Validate a getContact ``result``, lifting ``lists``/``fields`` nested inside ``email``."""
        if isinstance(result, dict) and isinstance(result.get("email"), dict):
            nested = result["email"]
            lifted = dict(result)
            for key in ("lists", "fields"):
                if key not in lifted and key in nested:
                    lifted[key] = nested[key]
            return cls.model_validate(lifted)
        return cls.model_validate(result)


class ListInfo(_Lenient):
    """One entry of getLists."""

    id: int
    title: str


class FieldInfo(_Lenient):
    """One entry of getFields."""

    id: int
    name: str
    type: str = "string"
    public_name: str | None = None


class CreatedId(_Lenient):
    """The ``{"id": N}`` result of createList / createField."""

    id: int
