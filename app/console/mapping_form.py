"""The mapping editor's form: a sync spec as rows of HTML controls, and the posted rows back as a ``SpecIn``
(checked by pydantic here, then by ``specs`` against both providers exactly as the API's PUT is). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.sync.spec import ActivityName, Direction, FieldIn, ListIn, ListRule, SourceKind, SpecIn

BLANK_FIELD_ROWS = 2
BLANK_LIST_ROWS = 1
MAX_ROWS = 60
BUILT_IN_SOURCES = [
    (SourceKind.NAME.value, "Name"),
    (SourceKind.FIRST_NAME.value, "First name"),
    (SourceKind.LAST_NAME.value, "Last name"),
    (SourceKind.RESPONSIBLE_USER.value, "Responsible user"),
    (SourceKind.TAGS.value, "Tags"),
    (SourceKind.CREATED_AT.value, "Created at"),
]
SEGMENTS = [
    ("all", "Everyone"),
    ("tag", "Contacts with the tag"),
    ("tags_any", "Contacts with any of the tags"),
]
DIRECTIONS = [(d.value, d.value.replace("_", " ")) for d in Direction]
ACTIVITY = [a.value for a in ActivityName]


@dataclass
class FieldRow:
    source: str = ""
    source2: str = ""  # a second source joined to the first
    separator: str = " "
    target: str = ""
    new_target: str = ""  # a Unisender field to create
    direction: str = Direction.TO_UNISENDER.value


@dataclass
class ListRow:
    list_id: str = ""
    new_title: str = ""  # a Unisender list to create (or an existing one named by title)
    segment: str = "all"
    tags: str = ""  # one tag, or several separated by commas


@dataclass
class MappingForm:
    fields: list[FieldRow] = field(default_factory=list)
    lists: list[ListRow] = field(default_factory=list)
    activity: set[str] = field(default_factory=set)
    create_contacts: bool = False

    def with_blank_rows(self) -> MappingForm:
        return MappingForm(
            fields=[*self.fields, *(FieldRow() for _ in range(BLANK_FIELD_ROWS))],
            lists=[*self.lists, *(ListRow() for _ in range(BLANK_LIST_ROWS))],
            activity=set(self.activity),
            create_contacts=self.create_contacts,
        )


def _source_value(ref: Mapping[str, Any], written: str) -> str:
    if ref.get("kind") == SourceKind.CUSTOM_FIELD.value:
        return f"custom_field:{ref.get('code') or ref.get('field_id')}"
    return str(ref.get("kind") or written)


def form_of(
    fields: list[Any], lists: list[ListRule], activity: list[str], create_contacts: bool
) -> MappingForm:
    """The spec in force (``specs.mapping_view``) as form rows; custom fields named as the live list names
    them (by code when they have one, else by id)."""
    rows: list[FieldRow] = []
    for rule in fields:
        written = list(rule.get("source") or [])
        refs = list(rule.get("sources") or [])
        values = [_source_value(ref, w) for ref, w in zip(refs, written, strict=False)] or written
        rows.append(
            FieldRow(
                source=values[0] if values else "",
                source2=values[1] if len(values) > 1 else "",
                separator=str(rule.get("separator", " ")),
                target=str(rule.get("target", "")),
                direction=str(rule.get("direction", Direction.TO_UNISENDER.value)),
            )
        )
    list_rows = []
    for lst in lists:
        segment = "all" if lst.all else ("tag" if lst.tag is not None else "tags_any")
        list_rows.append(
            ListRow(
                list_id=str(lst.list_id) if lst.list_id is not None else "",
                new_title="" if lst.list_id is not None else (lst.title or ""),
                segment=segment,
                tags=", ".join(lst.tags()),
            )
        )
    kinds = set(activity)
    names = {a for a in ACTIVITY if a in kinds}
    if {"soft_bounce", "hard_bounce"} <= kinds:
        names = (names - {"soft_bounce", "hard_bounce"}) | {"bounced"}
    return MappingForm(rows, list_rows, names, create_contacts)


def _text(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def read_form(form: Mapping[str, Any]) -> MappingForm:
    """The rows as posted (blank rows dropped), to show again whatever the outcome."""
    fields: list[FieldRow] = []
    lists: list[ListRow] = []
    for i in range(MAX_ROWS):
        p = f"field-{i}-"
        row = FieldRow(
            source=_text(form, p + "source"),
            source2=_text(form, p + "source2"),
            separator=str(form.get(p + "separator") or " ")[:10],
            target=_text(form, p + "target"),
            new_target=_text(form, p + "new_target"),
            direction=_text(form, p + "direction") or Direction.TO_UNISENDER.value,
        )
        if row.source or row.target or row.new_target:
            fields.append(row)
        q = f"list-{i}-"
        lrow = ListRow(
            list_id=_text(form, q + "list_id"),
            new_title=_text(form, q + "new_title"),
            segment=_text(form, q + "segment") or "all",
            tags=_text(form, q + "tags"),
        )
        if lrow.list_id or lrow.new_title:
            lists.append(lrow)
    activity = {a for a in ACTIVITY if form.get(f"activity-{a}")}
    return MappingForm(fields, lists, activity, bool(form.get("create_contacts")))


def spec_of(mf: MappingForm) -> tuple[SpecIn | None, list[str]]:
    """The ``SpecIn`` the rows describe, or the problems that stop it (nothing is sent anywhere)."""
    problems: list[str] = []
    fields: list[dict[str, Any]] = []
    for n, row in enumerate(mf.fields, 1):
        target = row.new_target or row.target
        if not row.source or not target:
            problems.append(f"Field row {n}: choose both a Kommo source and a Unisender field.")
            continue
        source: str | list[str] = [row.source, row.source2] if row.source2 else row.source
        fields.append(
            {"source": source, "target": target, "direction": row.direction, "separator": row.separator}
        )
    lists: list[dict[str, Any]] = []
    for n, lrow in enumerate(mf.lists, 1):
        entry: dict[str, Any] = {}
        if lrow.new_title:
            entry["list_title"] = lrow.new_title
        elif lrow.list_id.isdigit():
            entry["list_id"] = int(lrow.list_id)
        else:
            problems.append(f"List row {n}: choose a list.")
            continue
        tags = [t.strip() for t in lrow.tags.split(",") if t.strip()]
        if lrow.segment == "all":
            entry["all"] = True
        elif lrow.segment == "tag" and len(tags) == 1:
            entry["tag"] = tags[0]
        elif lrow.segment == "tags_any" and tags:
            entry["tags_any"] = tags
        else:
            problems.append(f"List row {n}: name the tag (one for “tag”, one or more for “any of”).")
            continue
        lists.append(entry)
    if problems:
        return None, problems
    creates = any(r.new_target for r in mf.fields) or any(r.new_title for r in mf.lists)
    try:
        spec = SpecIn(
            fields=[FieldIn.model_validate(f) for f in fields],
            lists=[ListIn.model_validate(entry) for entry in lists],
            create_missing=creates,
            create_contacts=mf.create_contacts,
            activity=[ActivityName(a) for a in ACTIVITY if a in mf.activity],
        )
    except ValidationError as exc:
        return None, [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return spec, []
