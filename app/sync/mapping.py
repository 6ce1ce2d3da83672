"""Pure mapping from CRM contacts and the account's sync spec to the desired state of addresses in the email
platform (no I/O).

An address's desired state is a function of its owner (the most recently updated live contact holding it),
the spec, the account's base list, the CRM's user names and the lists the address unsubscribed from:
``desired``. Its ``payload`` is what the outbox stores and the push sends; its hash (``payload_hash``) is what
no-op suppression compares. The hash leaves out empty fields, so "empty" and "never written" are the same
state: mapping a new field that is empty everywhere sends nothing, and clearing a value sends the clear.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from app.connectors.base import CrmContact, CrmFieldValue, day_month_year_seconds
from app.sync.held import held_value
from app.sync.spec import (
    DATE_SOURCE_TYPES,
    PHONE_TARGET,
    Direction,
    FieldRule,
    SourceKind,
    SourceRef,
    StoredSpec,
)

# Deliberately simple and strict: one @, a dot in the domain, no spaces or control characters. The email
# platform has the final word (its per-row rejections are recorded), this only filters obvious garbage.
_EMAIL_RE = re.compile(
    r"^[^@\s\x00-\x1f\"<>,;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$"
)
MAX_EMAIL_LENGTH = 254


def normalize_email(raw: str) -> str | None:
    """Lower-case and trim an address; None when it is not a plausible address."""
    email = raw.strip().lower()
    if not email or len(email) > MAX_EMAIL_LENGTH or not _EMAIL_RE.match(email):
        return None
    return email


def contact_emails(raw_values: tuple[str, ...] | list[str]) -> list[str]:
    """A contact's distinct valid addresses, in first-seen order."""
    seen: dict[str, None] = {}
    for raw in raw_values:
        email = normalize_email(raw)
        if email is not None:
            seen.setdefault(email, None)
    return list(seen)


# --- what a contact row keeps for the spec --------------------------------------------------------------------


def contact_data(c: CrmContact, held: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The part of a CRM contact a spec may map besides its name and tags, as the ``contact.data`` column
    holds it (custom fields by id, as text; see ``CrmFieldValue``). What the version does not carry (a first
    or last name of None) is taken from ``held``, the data stored before."""
    held = held or {}
    return {
        "first_name": c.first_name if c.first_name is not None else str(held.get("first_name") or ""),
        "last_name": c.last_name if c.last_name is not None else str(held.get("last_name") or ""),
        "responsible_user_id": c.responsible_user_id,
        "created_at": c.created_at,
        "fields": {str(f.field_id): list(f.values) for f in c.fields},
    }


@dataclass(frozen=True, slots=True)
class ContactView:
    """The owner of an address as the derivation reads it."""

    kommo_id: int
    name: str
    tags: Sequence[str] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    emails: Sequence[str] = ()  # normalised, sorted: the first is the one that carries the phone


# --- conversions ------------------------------------------------------------------------------------------------


# Conversions are cached: an account's dates and numbers repeat (days, scores), and a spec change's walk
# converts every address's values again.
@functools.lru_cache(maxsize=65536)
def _number(text: str) -> str:
    """A number as Unisender's number fields take it: a plain decimal with ``.``; not a number → as is (the
    platform refuses the row, and the refusal is shown)."""
    try:
        d = Decimal(text.strip().replace(",", "."))
    except InvalidOperation:
        return text
    if not d.is_finite():
        return text
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


@functools.lru_cache(maxsize=65536)
def _date(text: str, *, with_time: bool) -> str:
    """Unix seconds → ``YYYY-MM-DD`` (a date field) or ``YYYY-MM-DD hh:mm:ss`` (text), in UTC. A day written
    ``dd.mm.yyyy`` is that day: the CRM's webhooks may carry a date field's value in that form, untyped."""
    try:
        moment = datetime.fromtimestamp(int(day_month_year_seconds(text) or text), UTC)
    except (ValueError, OverflowError, OSError):
        return text
    return moment.strftime("%Y-%m-%d %H:%M:%S" if with_time else "%Y-%m-%d")


def phone_number(raw: str) -> str:
    """A phone in international format: ``+`` and its digits. Written numbers (``8 (912) 555-01-02``) keep
    their digits; whether it is a real number is the platform's to judge (a refused row is reported)."""
    digits = "".join(ch for ch in raw if ch.isdigit())
    return f"+{digits}" if digits else ""


def typed_days(versions: Sequence[CrmContact], date_fields: Collection[int]) -> list[CrmContact]:
    """``versions`` with each ``dd.mm.yyyy`` value of a date field (``date_fields``) as the unix seconds REST
    reads: a webhook carries values without their field's type, and Kommo's old birthday layout wrote a day
    that way. Stored, a value must be one text whichever channel brought it, since two-way change times and
    write checks compare stored texts."""
    out: list[CrmContact] = []
    for c in versions:
        fields = tuple(
            CrmFieldValue(f.field_id, tuple(day_month_year_seconds(v) or v for v in f.values))
            if f.field_id in date_fields
            else f
            for f in c.fields
        )
        out.append(c if fields == c.fields else dataclasses.replace(c, fields=fields))
    return out


def has_day_texts(versions: Sequence[CrmContact]) -> bool:
    """Whether any value of ``versions`` is written ``dd.mm.yyyy`` (the cheap test before ``typed_days``)."""
    return any(day_month_year_seconds(v) for c in versions for f in c.fields for v in f.values)


Reader = Callable[[ContactView], str]


def _values_of(field_id: int | None) -> Callable[[ContactView], list[Any]]:
    key = str(field_id)

    def values(view: ContactView) -> list[Any]:
        fields = view.data.get("fields")
        return (fields.get(key) if fields else None) or []

    return values


def _custom_reader(ref: SourceRef, target_type: str) -> Reader:
    """A custom field's value as the target takes it; the type decisions are taken here, once per spec."""
    values = _values_of(ref.field_id)
    if ref.type == "checkbox":
        return lambda v: "1" if (vals := values(v)) and str(vals[0]).strip().lower() in ("1", "true") else "0"
    if ref.type == "numeric":
        return lambda v: _number(str(vals[0])) if (vals := values(v)) else ""
    if ref.type in DATE_SOURCE_TYPES:
        with_time = ref.type == "date_time" and target_type != "date"
        return lambda v: _date(str(vals[0]), with_time=with_time) if (vals := values(v)) else ""
    if target_type == PHONE_TARGET:
        return lambda v: phone_number(str(vals[0])) if (vals := values(v)) else ""
    if ref.type in ("multiselect", "multitext", "smart_address"):
        return lambda v: ", ".join(str(x) for x in values(v))
    return lambda v: str(vals[0]) if (vals := values(v)) else ""


def _reader(ref: SourceRef, target_type: str, users: Mapping[int, str]) -> Reader:
    """One source's value as the target field takes it ("" when empty)."""
    match ref.kind:
        case SourceKind.NAME:
            return lambda v: v.name
        case SourceKind.FIRST_NAME | SourceKind.LAST_NAME:
            key = ref.kind.value
            return lambda v: str(v.data.get(key) or "")
        case SourceKind.RESPONSIBLE_USER:
            return lambda v: users.get(int(uid), "") if (uid := v.data.get("responsible_user_id")) else ""
        case SourceKind.TAGS:
            return lambda v: ", ".join(sorted(v.tags, key=str.casefold))
        case SourceKind.CREATED_AT:
            with_time = target_type != "date"
            return lambda v: _date(str(c), with_time=with_time) if (c := v.data.get("created_at")) else ""
    return _custom_reader(ref, target_type)


def _rule_reader(rule: FieldRule, users: Mapping[int, str]) -> Reader:
    parts = [_reader(ref, rule.target_type, users) for ref in rule.sources]
    if len(parts) == 1:
        return parts[0]
    sep = rule.separator
    return lambda v: sep.join(text for part in parts if (text := part(v)))


# --- the desired state --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledSpec:
    """A spec turned into readers, once: deriving an address then costs only the reads (a spec change's
    walk derives tens of thousands of addresses a second)."""

    fields: tuple[tuple[str, Reader], ...]
    phone: Reader | None
    lists: tuple[tuple[int, bool, frozenset[str]], ...]  # list id, everyone, the tags (case-folded)
    # Targets of ``to_kommo`` rules: the platform owns them, so they are never pushed (no ``fields`` entry, so
    # no import column: a CRM edit leaves the platform's value alone); their readers only tell whether the CRM
    # holds a platform value already (``reader``).
    owned: tuple[str, ...] = ()
    owned_readers: tuple[tuple[str, Reader], ...] = ()

    @classmethod
    def of(cls, spec: StoredSpec, *, base_list_id: int | None, users: Mapping[int, str]) -> CompiledSpec:
        fields: list[tuple[str, Reader]] = []
        phone: Reader | None = None
        owned: list[tuple[str, Reader]] = []
        for rule in spec.fields:
            if rule.direction is Direction.TO_KOMMO:
                owned.append((rule.target, _rule_reader(rule, users)))
            elif rule.target_type == PHONE_TARGET:
                phone = _rule_reader(rule, users)
            else:
                fields.append((rule.target, _rule_reader(rule, users)))
        lists = []
        for lrule in spec.lists:
            list_id = base_list_id if lrule.base else lrule.list_id
            if list_id is not None:
                lists.append((list_id, lrule.all, frozenset(t.casefold() for t in lrule.tags())))
        return cls(tuple(fields), phone, tuple(lists), tuple(t for t, _ in owned), tuple(owned))

    def reader(self, target: str) -> Reader | None:
        """The reader of the rule targeting ``target``, pushed or owned by the platform (not the phone's)."""
        return dict(self.fields).get(target) or dict(self.owned_readers).get(target)

    def lists_for(self, tags: Sequence[str]) -> tuple[list[int], list[int]]:
        have = {t.casefold() for t in tags}
        wanted = {list_id for list_id, everyone, want in self.lists if everyone or not have.isdisjoint(want)}
        others = {list_id for list_id, _, _ in self.lists} - wanted
        return sorted(wanted), sorted(others)

    def desired(
        self,
        owner: ContactView | None,
        *,
        email: str | None = None,
        unsubscribed_lists: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """See ``desired``."""
        if owner is None:
            return {"delete": True}
        phone = ""
        if self.phone is not None and (email is None or not owner.emails or owner.emails[0] == email):
            phone = self.phone(owner)
        wanted, others = self.lists_for(owner.tags)
        return {
            "delete": False,
            "fields": {target: read(owner) for target, read in self.fields},
            "phone": phone,
            "lists": [i for i in wanted if i not in unsubscribed_lists],
            "excluded": [i for i in others if i not in unsubscribed_lists],
            "unsubscribed": sorted(unsubscribed_lists),
        }


def desired(
    owner: ContactView | None,
    spec: StoredSpec,
    *,
    email: str | None = None,
    base_list_id: int | None,
    users: Mapping[int, str],
    unsubscribed_lists: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """The payload an address should have in the platform: deleted when no live contact holds it, else every
    mapped field ("" clears it), its phone, the lists its segments select, the spec's other lists to leave,
    and the lists it unsubscribed from (kept unsubscribed: never joined again, never left, which would lose
    the mark).

    The platform gives a phone to one subscriber only, so of a contact's addresses only the first (``email``
    equal to ``owner.emails[0]``, or no ``email`` given) carries it; the others would be refused."""
    compiled = CompiledSpec.of(spec, base_list_id=base_list_id, users=users)
    return compiled.desired(owner, email=email, unsubscribed_lists=unsubscribed_lists)


def keep_phone(wanted: dict[str, Any], held: Mapping[str, Any] | None) -> dict[str, Any]:
    """The platform's import cannot clear a phone: when the contact has none now, the address keeps the one
    it was given, and the desired state says so (else every such address would look changed forever)."""
    if wanted.get("delete") or wanted.get("phone") or not held or held.get("delete"):
        return wanted
    if held.get("phone"):
        return {**wanted, "phone": held["phone"]}
    return wanted


def payload_hash(payload: Mapping[str, Any]) -> str:
    """Fingerprint of a payload: two payloads with the same one push the same state (empty fields count as
    absent, and the lists to leave are not state: the address is simply not in them)."""
    if payload.get("delete"):
        key: dict[str, Any] = {"d": True}
    else:
        fields = payload.get("fields") or {}
        key = {
            "f": {k: v for k, v in fields.items() if v != ""},
            "p": payload.get("phone") or "",
            "l": list(payload.get("lists") or ()),
            "u": list(payload.get("unsubscribed") or ()),
        }
    # orjson with sorted keys writes what json.dumps(sort_keys, compact, non-ASCII as is) wrote for these
    # values (strings, integers, lists, dicts), so hashes stored before stay comparable.
    try:
        blob = orjson.dumps(key, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        blob = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True, slots=True)
class Difference:
    """How a desired payload differs from what the platform holds (per our last accepted push)."""

    fields: dict[str, tuple[str, str]]  # target → (held, wanted)
    join: list[int]
    leave: list[int]
    delete: bool = False
    phone: tuple[str, str] | None = None
    create: bool = False  # the platform does not hold the address (any more)

    @property
    def empty(self) -> bool:
        return not (self.fields or self.join or self.leave or self.delete or self.phone or self.create)


def difference(held: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> Difference:
    """Per field and list, what pushing ``wanted`` over ``held`` (None: nothing pushed yet) changes."""
    held = held or {"delete": True}
    if wanted.get("delete"):
        return Difference({}, [], [], delete=not held.get("delete"))
    # What the platform holds of a field it owned until now (``kept``) counts as held too: a rule turned from
    # ``to_kommo`` to pushing sends the CRM's value where it differs (an empty one clears the field). The push
    # record's own entry, where there is one, is the later (``held_value``).
    held_fields = {} if held.get("delete") else {**(held.get("kept") or {}), **(held.get("fields") or {})}
    wanted_fields = wanted.get("fields") or {}
    fields = {
        name: (str(held_fields.get(name, "")), str(value))
        for name, value in wanted_fields.items()
        if str(held_fields.get(name, "")) != str(value)
    }
    held_lists = set() if held.get("delete") else set(held.get("lists") or ())
    want_lists = set(wanted.get("lists") or ())
    held_phone = "" if held.get("delete") else (held_value(held, PHONE_TARGET) or "")
    want_phone = str(wanted.get("phone") or "")
    return Difference(
        fields,
        sorted(want_lists - held_lists),
        # Only lists the spec still maps are left: a list it stopped mapping keeps its members.
        sorted(held_lists & set(wanted.get("excluded") or ())),
        phone=(held_phone, want_phone) if want_phone != held_phone and want_phone else None,
        create=bool(held.get("delete")),
    )


# An outbox row's ``pushed_hash`` after a push whose outcome is unknown (a timeout, a broken connection, a 5xx:
# the platform may have applied it): what the platform holds is unknown until a push is accepted.
OUTCOME_UNKNOWN = "?"


def already_held(
    wanted: Mapping[str, Any], pushed_hash: str | None, pushed: Mapping[str, Any] | None, *, owned: bool
) -> bool:
    """Whether the platform already holds ``wanted`` for an address with an outbox row, given what it last
    accepted from us: nothing to push. An address never pushed and now without owner was never there; after a
    push of unknown outcome, nothing is known to be held."""
    if pushed_hash is None:
        return not owned
    if pushed_hash == OUTCOME_UNKNOWN:
        return False
    if pushed is None:
        return payload_hash(wanted) == pushed_hash  # accepted before payloads were kept
    return difference(pushed, wanted).empty
