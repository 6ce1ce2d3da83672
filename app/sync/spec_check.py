"""Checking a sync spec (``SpecIn``) against the providers' fields and lists, and resolving it into a
``StoredSpec``; pure: the caller reads the providers (``app.sync.specs``).

Rules a spec must follow (each broken one is reported against its entry, and nothing is stored):
- a source is ``name``, ``first_name``, ``last_name``, ``responsible_user``, ``tags``, ``created_at`` or
  ``custom_field:<id>`` / ``custom_field:<CODE>`` of a supported type, never the key address field (EMAIL);
  a list of sources is joined with ``separator`` into a string/text target;
- a target is an existing platform field, or one ``create_missing`` creates with a type that fits, or
  ``phone`` (the platform's phone channel); system columns are not targets; one target per entry;
- the source's type must fit the target's (``_FITS``);
- ``to_kommo``/``both`` need a single writable source (a stored field, not a join, tags, dates we derive);
- a list is named by ``list_id`` or ``list_title`` and holds one segment: ``all``, one ``tag`` or ``tags_any``;
  a list appears once, a tag selects one list, and ``all`` appears once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.connectors.base import CrmFieldDef, EspField, EspList
from app.sync.spec import (
    DEFAULT_ACTIVITY,
    EMAIL_CODE,
    PHONE_TARGET,
    Direction,
    FieldIn,
    FieldRule,
    ListRule,
    SourceKind,
    SourceRef,
    SpecIn,
    StoredSpec,
    activity_kinds,
)

_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

_STANDARD_TYPES = {
    SourceKind.NAME: "text",
    SourceKind.FIRST_NAME: "text",
    SourceKind.LAST_NAME: "text",
    SourceKind.RESPONSIBLE_USER: "text",
    SourceKind.TAGS: "text",
    SourceKind.CREATED_AT: "date_time",
}
_STANDARD_NAMES = {
    SourceKind.NAME: "Name",
    SourceKind.FIRST_NAME: "First name",
    SourceKind.LAST_NAME: "Last name",
    SourceKind.RESPONSIBLE_USER: "Responsible user",
    SourceKind.TAGS: "Tags",
    SourceKind.CREATED_AT: "Created at",
}
# Sources the CRM side could take a value back into (issue of the other direction): stored fields only.
_WRITABLE = frozenset({SourceKind.NAME, SourceKind.FIRST_NAME, SourceKind.LAST_NAME, SourceKind.CUSTOM_FIELD})

TEXT_SOURCES = frozenset(
    {"text", "textarea", "url", "streetaddress", "smart_address", "select", "radiobutton", "multiselect"}
)
DATE_SOURCES = frozenset({"date", "birthday", "date_time"})
SUPPORTED_SOURCES = TEXT_SOURCES | DATE_SOURCES | {"numeric", "checkbox", "multitext"}
TARGET_TYPES = frozenset({"string", "text", "number", "date", "bool"})

# Which platform field types a CRM source type may feed.
_FITS: dict[str, frozenset[str]] = {
    **{t: frozenset({"string", "text"}) for t in TEXT_SOURCES},
    "multitext": frozenset({"string", "text", PHONE_TARGET}),
    "numeric": frozenset({"number", "string", "text"}),
    "checkbox": frozenset({"bool", "number", "string", "text"}),
    **{t: frozenset({"date", "string", "text"}) for t in DATE_SOURCES},
}
_FITS["text"] = frozenset({"string", "text", PHONE_TARGET})


def fitting_type(source_types: Sequence[str]) -> str:
    """The platform type a missing target is created with."""
    if len(source_types) != 1:
        return "string"
    only = source_types[0]
    if only == "numeric":
        return "number"
    if only == "checkbox":
        return "bool"
    if only in DATE_SOURCES:
        return "date"
    if only == "textarea":
        return "text"
    return "string"


# --- resolving ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpecError:
    loc: str  # "fields[2]", "lists[0]"
    code: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"loc": self.loc, "code": self.code, "message": self.message}


@dataclass
class Resolution:
    """A checked spec: errors (nothing may be stored), or the spec and what must be created first."""

    spec: StoredSpec
    errors: list[SpecError] = field(default_factory=list)
    create_fields: dict[str, str] = field(default_factory=dict)  # platform field name → type
    create_lists: list[str] = field(default_factory=list)  # titles; their rules get the ids once created

    def set_list_ids(self, created: dict[str, int]) -> None:
        for rule in self.spec.lists:
            if rule.list_id is None and not rule.base and rule.title in created:
                rule.list_id = created[rule.title]


def resolve(
    spec: SpecIn,
    crm_fields: Sequence[CrmFieldDef],
    esp_fields: Sequence[EspField],
    esp_lists: Sequence[EspList],
    reserved: frozenset[str] = frozenset(),
) -> Resolution:
    """Check ``spec`` against the providers' fields and lists (``reserved``: the platform's column names no
    field may take); see the module's rules."""
    errors: list[SpecError] = []
    out = Resolution(StoredSpec(), errors)
    by_id = {f.id: f for f in crm_fields}
    by_code = {f.code.upper(): f for f in crm_fields if f.code}
    esp_by_name = {f.name: f for f in esp_fields}
    targets: set[str] = set()
    for i, entry in enumerate(spec.fields):
        loc = f"fields[{i}]"
        rule = _resolve_field(
            entry, loc, by_id, by_code, esp_by_name, spec.create_missing, reserved, errors, out
        )
        if rule is None:
            continue
        if rule.target in targets:
            errors.append(SpecError(loc, "duplicate_target", f"Target {rule.target!r} is mapped twice."))
            continue
        targets.add(rule.target)
        out.spec.fields.append(rule)
    _resolve_lists(spec, esp_lists, errors, out)
    out.spec.activity = activity_kinds(DEFAULT_ACTIVITY if spec.activity is None else spec.activity)
    out.spec.create_contacts = spec.create_contacts
    return out


def _resolve_source(
    raw: str,
    loc: str,
    by_id: dict[int, CrmFieldDef],
    by_code: dict[str, CrmFieldDef],
    errors: list[SpecError],
) -> SourceRef | None:
    kind_text, _, key = raw.strip().partition(":")
    try:
        kind = SourceKind(kind_text)
    except ValueError:
        errors.append(SpecError(loc, "unknown_source", f"Unknown source {raw!r}."))
        return None
    if kind is not SourceKind.CUSTOM_FIELD:
        if key:
            errors.append(SpecError(loc, "unknown_source", f"Unknown source {raw!r}."))
            return None
        return SourceRef(kind=kind, type=_STANDARD_TYPES[kind], name=_STANDARD_NAMES[kind])
    found = by_id.get(int(key)) if key.isdigit() else by_code.get(key.upper())
    if found is None:
        errors.append(SpecError(loc, "unknown_kommo_field", f"Kommo has no contact field {key!r}."))
        return None
    if (found.code or "").upper() == EMAIL_CODE:
        errors.append(
            SpecError(loc, "key_field", "The email field is the address itself; it cannot be mapped.")
        )
        return None
    if found.type not in SUPPORTED_SOURCES:
        errors.append(
            SpecError(
                loc, "unsupported_type", f"Kommo field {found.name!r} has type {found.type!r}, not mappable."
            )
        )
        return None
    return SourceRef(
        kind=kind, field_id=found.id, type=found.type, name=found.name, code=(found.code or None)
    )


def _resolve_field(
    entry: FieldIn,
    loc: str,
    by_id: dict[int, CrmFieldDef],
    by_code: dict[str, CrmFieldDef],
    esp_by_name: dict[str, EspField],
    create_missing: bool,
    reserved: frozenset[str],
    errors: list[SpecError],
    out: Resolution,
) -> FieldRule | None:
    raw_sources = [entry.source] if isinstance(entry.source, str) else list(entry.source)
    if not raw_sources or len(raw_sources) > 10:
        errors.append(SpecError(loc, "invalid_source", "Give one source, or a list of 1 to 10 to join."))
        return None
    before = len(errors)
    sources = [_resolve_source(raw, loc, by_id, by_code, errors) for raw in raw_sources]
    if len(errors) > before:
        return None
    refs = [s for s in sources if s is not None]
    target = entry.target.strip()
    if target.lower() == PHONE_TARGET:
        target, target_type = PHONE_TARGET, PHONE_TARGET
    elif target.lower() in reserved:
        errors.append(SpecError(loc, "reserved_target", f"{target!r} is a system column, not a field."))
        return None
    elif target in esp_by_name:
        target_type = esp_by_name[target].type
    elif target in out.create_fields:
        target_type = out.create_fields[target]
    elif not create_missing:
        errors.append(
            SpecError(
                loc,
                "unknown_unisender_field",
                f"Unisender has no field {target!r} (create_missing: true creates it).",
            )
        )
        return None
    elif not _FIELD_NAME.match(target):
        errors.append(
            SpecError(
                loc,
                "invalid_target",
                f"{target!r} is not a valid Unisender field name (Latin letters, digits, _; a letter first).",
            )
        )
        return None
    else:
        target_type = fitting_type([r.type for r in refs])
        out.create_fields[target] = target_type
    joined = len(refs) > 1
    if target_type not in TARGET_TYPES | {PHONE_TARGET}:
        target_type = "string"  # a type the platform added later: its values are text anyway
    if joined and target_type not in ("string", "text"):
        errors.append(
            SpecError(loc, "type_mismatch", f"A join goes to a string or text field, not {target_type}.")
        )
        return None
    unfit = next((ref for ref in refs if target_type not in _FITS.get(ref.type, frozenset())), None)
    if unfit is not None:
        errors.append(
            SpecError(
                loc,
                "type_mismatch",
                f"Kommo {unfit.name!r} ({unfit.type}) cannot feed Unisender {target!r} ({target_type}).",
            )
        )
        return None
    if entry.direction is not Direction.TO_UNISENDER and (joined or refs[0].kind not in _WRITABLE):
        errors.append(
            SpecError(
                loc, "invalid_direction", f"{entry.direction} needs a single stored Kommo field as source."
            )
        )
        return None
    return FieldRule(
        source=raw_sources,
        target=target,
        direction=entry.direction,
        separator=entry.separator,
        sources=refs,
        target_type=target_type,
    )


def _resolve_lists(
    spec: SpecIn, esp_lists: Sequence[EspList], errors: list[SpecError], out: Resolution
) -> None:
    by_id = {lst.id: lst for lst in esp_lists}
    by_title = {lst.title: lst for lst in esp_lists}
    seen_lists: set[str] = set()
    seen_tags: dict[str, int] = {}
    all_at: int | None = None
    for i, entry in enumerate(spec.lists):
        loc = f"lists[{i}]"
        segments = [entry.all, entry.tag is not None, entry.tags_any is not None]
        if sum(segments) != 1:
            errors.append(SpecError(loc, "invalid_rule", "Give exactly one of all, tag or tags_any."))
            continue
        if (entry.list_id is None) == (entry.list_title is None):
            errors.append(
                SpecError(loc, "invalid_rule", "Name the list by exactly one of list_id or list_title.")
            )
            continue
        tags = [entry.tag] if entry.tag is not None else [t.strip() for t in entry.tags_any or []]
        if not entry.all and (not tags or any(not t for t in tags)):
            errors.append(SpecError(loc, "invalid_rule", "tags_any needs one or more non-empty tags."))
            continue
        if entry.list_id is not None:
            found = by_id.get(entry.list_id)
            if found is None:
                errors.append(SpecError(loc, "unknown_list", f"Unisender has no list {entry.list_id}."))
                continue
            list_id, title = found.id, found.title
        else:
            title = (entry.list_title or "").strip()
            found = by_title.get(title)
            if found is not None:
                list_id = found.id
            elif spec.create_missing:
                list_id = None
                if title not in out.create_lists:
                    out.create_lists.append(title)
            else:
                errors.append(
                    SpecError(
                        loc,
                        "unknown_list",
                        f"Unisender has no list {title!r} (create_missing: true creates it).",
                    )
                )
                continue
        key = f"id:{list_id}" if list_id is not None else f"title:{title}"
        if key in seen_lists:
            errors.append(SpecError(loc, "duplicate_list", f"List {title!r} is mapped twice."))
            continue
        if entry.all:
            if all_at is not None:
                errors.append(
                    SpecError(loc, "duplicate_segment", f"All contacts already go to lists[{all_at}].")
                )
                continue
            all_at = i
        clash = next((t for t in tags if t.casefold() in seen_tags), None)
        if clash is not None:
            errors.append(
                SpecError(
                    loc,
                    "duplicate_tag",
                    f"Tag {clash!r} already selects lists[{seen_tags[clash.casefold()]}].",
                )
            )
            continue
        seen_lists.add(key)
        seen_tags.update({t.casefold(): i for t in tags})
        out.spec.lists.append(
            ListRule(
                list_id=list_id,
                title=title,
                all=entry.all,
                tag=entry.tag.strip() if entry.tag is not None else None,
                tags_any=[] if entry.tags_any is None else tags,
            )
        )
