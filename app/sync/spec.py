"""The sync spec: which CRM sources feed which email-platform fields, and which CRM segments are which lists.

An operator writes a ``SpecIn`` (sources and targets by name); ``app.sync.spec_check.resolve`` checks it
against what the two providers hold and turns it into a ``StoredSpec``, where every source and target carries
its resolved id and type, so that deriving an address's desired state (``app.sync.mapping``) needs no provider
at all. This module holds the two shapes and the default spec. Pure: no I/O here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_FIELDS = 50  # the platform's user fields per import call
MAX_LISTS = 50
PHONE_TARGET = "phone"
EMAIL_CODE = "EMAIL"
PHONE_CODE = "PHONE"


class Direction(StrEnum):
    TO_UNISENDER = "to_unisender"
    TO_KOMMO = "to_kommo"
    BOTH = "both"


DATE_SOURCE_TYPES = frozenset({"date", "date_time", "birthday"})


class SourceKind(StrEnum):
    NAME = "name"
    FIRST_NAME = "first_name"
    LAST_NAME = "last_name"
    RESPONSIBLE_USER = "responsible_user"
    TAGS = "tags"
    CREATED_AT = "created_at"
    CUSTOM_FIELD = "custom_field"


# --- what operators send ----------------------------------------------------------------------------------


class FieldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | list[str] = Field(description="A source, or several joined with `separator`")
    target: str = Field(min_length=1, max_length=64, description="A Unisender field name, or `phone`")
    direction: Direction = Direction.TO_UNISENDER
    separator: str = Field(" ", max_length=10)


class ListIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    list_id: int | None = Field(None, gt=0)
    list_title: str | None = Field(None, min_length=1, max_length=255)
    all: bool = False
    tag: str | None = Field(None, min_length=1, max_length=255)
    tags_any: list[str] | None = Field(None, max_length=50)


class ActivityName(StrEnum):
    """What an operator may ask to see on the CRM contact's timeline (``bounced``: both kinds of bounce)."""

    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    SOFT_BOUNCE = "soft_bounce"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"


DEFAULT_ACTIVITY = (ActivityName.OPENED, ActivityName.CLICKED, ActivityName.BOUNCED, ActivityName.COMPLAINED)


def activity_kinds(names: list[ActivityName] | tuple[ActivityName, ...]) -> list[str]:
    """The activity kinds (``app.connectors.base.ActivityKind`` values) the names select, sorted."""
    kinds: set[str] = set()
    for name in names:
        if name is ActivityName.BOUNCED:
            kinds |= {ActivityName.SOFT_BOUNCE.value, ActivityName.HARD_BOUNCE.value}
        else:
            kinds.add(name.value)
    return sorted(kinds)


class SpecIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[FieldIn] = Field(default_factory=list, max_length=MAX_FIELDS)
    lists: list[ListIn] = Field(default_factory=list, max_length=MAX_LISTS)
    create_missing: bool = False
    create_contacts: bool = Field(
        False,
        description="An address no Kommo contact holds that joins a mapped list (a signup form) becomes a "
        "Kommo contact, tagged with that list's tag; when false it is recorded only",
    )
    activity: list[ActivityName] | None = Field(
        None,
        max_length=len(ActivityName),
        description="What email activity becomes a note on the Kommo contact (default: opened, clicked, "
        "bounced, complained; [] for none)",
    )


# --- what is stored -----------------------------------------------------------------------------------------


class SourceRef(BaseModel):
    kind: SourceKind
    field_id: int | None = None
    type: str  # the CRM type name
    name: str  # the CRM's display name (as of the spec's version)
    code: str | None = None


class FieldRule(BaseModel):
    source: list[str]  # as the operator wrote it
    target: str
    direction: Direction = Direction.TO_UNISENDER
    separator: str = " "
    sources: list[SourceRef]
    target_type: str  # string | text | number | date | bool | phone


class ListRule(BaseModel):
    base: bool = False  # the account's own list (esp_account.list_id), whatever its id: the default spec's
    list_id: int | None = None
    title: str | None = None
    all: bool = False
    tag: str | None = None
    tags_any: list[str] = Field(default_factory=list)

    @field_validator("tags_any", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    def tags(self) -> list[str]:
        return [self.tag] if self.tag is not None else list(self.tags_any)


class StoredSpec(BaseModel):
    fields: list[FieldRule] = Field(default_factory=list)
    lists: list[ListRule] = Field(default_factory=list)
    # Activity kinds written to the CRM; a spec stored before activity existed has the default.
    activity: list[str] = Field(default_factory=lambda: activity_kinds(DEFAULT_ACTIVITY))
    create_contacts: bool = False  # newsletter signups become CRM contacts (``app.sync.signups``)

    def uses(self, kind: SourceKind) -> bool:
        return any(ref.kind is kind for rule in self.fields for ref in rule.sources)

    def date_fields(self) -> frozenset[int]:
        """The CRM custom fields this spec maps that hold dates (date, date_time, birthday)."""
        return frozenset(
            ref.field_id
            for rule in self.fields
            for ref in rule.sources
            if ref.kind is SourceKind.CUSTOM_FIELD
            and ref.field_id is not None
            and ref.type in DATE_SOURCE_TYPES
        )


def default_spec() -> StoredSpec:
    """What every account starts with: the mirror's behaviour (the name as ``Name``, everyone in its list)."""
    return StoredSpec(
        fields=[
            FieldRule(
                source=["name"],
                target="Name",
                sources=[SourceRef(kind=SourceKind.NAME, type="text", name="Name")],
                target_type="string",
            )
        ],
        lists=[ListRule(base=True, all=True)],
    )
