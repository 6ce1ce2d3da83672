"""Accounts, custom-field definitions, tags and contacts, in memory, plus contact payload validation.

Contacts of an account live in a dict by id plus a list of the live ids kept sorted (ids only grow, so a
create is an append): a page in id order is a slice, not a sort. A (updated_at, id) index is built lazily
on the first query that needs it and then maintained incrementally.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

Values = list[tuple[Any, int | None]]  # (value, enum_id) pairs of one custom field


@dataclass(slots=True)
class FieldEnum:
    id: int
    value: str
    sort: int
    code: str | None  # what a contact value shows as enum_code (multitext: WORK/PRIV/...; select: None)


@dataclass(slots=True)
class FieldDef:
    id: int
    name: str
    type: str
    code: str | None
    sort: int
    enums: list[FieldEnum] | None
    is_predefined: bool = False
    is_api_only: bool = False

    def enum_by_id(self, enum_id: int) -> FieldEnum | None:
        for e in self.enums or ():
            if e.id == enum_id:
                return e
        return None

    def enum_by_value(self, value: str) -> FieldEnum | None:
        for e in self.enums or ():
            if e.value == value:
                return e
        return None


FIELD_TYPES = {
    "text",
    "textarea",
    "url",
    "numeric",
    "checkbox",
    "select",
    "radiobutton",
    "multiselect",
    "multitext",
    "date",
    "birthday",
    "date_time",
    "streetaddress",
}
TEXT_TYPES = {"text", "textarea", "url", "streetaddress"}
ENUM_TYPES = {"select", "radiobutton", "multiselect", "multitext"}
DATE_TYPES = {"date", "birthday", "date_time"}

# Predefined multitext fields. Ids of the first account match the spec §4.2 example (PHONE 771906, EMAIL
# 771908, PHONE/WORK 552476, EMAIL/WORK 552488); later accounts get the same layout shifted by 100000 per
# account, so a client that caches field ids across accounts is caught.
PHONE_ENUMS = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
EMAIL_ENUMS = ("WORK", "PRIV", "OTHER")


def predefined_fields(offset: int) -> list[FieldDef]:
    phone = FieldDef(
        id=771906 + offset,
        name="Phone",
        type="multitext",
        code="PHONE",
        sort=4,
        enums=[FieldEnum(552476 + offset + 2 * i, v, 2 * (i + 1), v) for i, v in enumerate(PHONE_ENUMS)],
        is_predefined=True,
    )
    email = FieldDef(
        id=771908 + offset,
        name="Email",
        type="multitext",
        code="EMAIL",
        sort=6,
        enums=[FieldEnum(552488 + offset + 2 * i, v, 2 * (i + 1), v) for i, v in enumerate(EMAIL_ENUMS)],
        is_predefined=True,
    )
    return [phone, email]


@dataclass(slots=True)
class Tag:
    id: int
    name: str


class Contact:
    __slots__ = (
        "created_at",
        "created_by",
        "deleted",
        "fields",
        "first_name",
        "group_id",
        "id",
        "last_name",
        "name",
        "responsible_user_id",
        "tags",
        "updated_at",
        "updated_by",
    )

    def __init__(
        self,
        cid: int,
        *,
        name: str,
        first_name: str,
        last_name: str,
        responsible_user_id: int,
        created_by: int,
        updated_by: int,
        created_at: int,
        updated_at: int,
        fields: list[tuple[int, Values]],
        tags: list[int],
    ) -> None:
        self.id = cid
        self.name = name
        self.first_name = first_name
        self.last_name = last_name
        self.responsible_user_id = responsible_user_id
        self.group_id = 0
        self.created_by = created_by
        self.updated_by = updated_by
        self.created_at = created_at
        self.updated_at = updated_at
        self.fields = fields  # [(field_id, [(value, enum_id)])] in the order they were first set
        self.tags = tags  # tag ids
        self.deleted = False

    def snapshot(self) -> Contact:
        c = Contact(
            self.id,
            name=self.name,
            first_name=self.first_name,
            last_name=self.last_name,
            responsible_user_id=self.responsible_user_id,
            created_by=self.created_by,
            updated_by=self.updated_by,
            created_at=self.created_at,
            updated_at=self.updated_at,
            fields=[(fid, list(vals)) for fid, vals in self.fields],
            tags=list(self.tags),
        )
        c.group_id = self.group_id
        c.deleted = self.deleted
        return c

    def field_values(self, field_id: int) -> Values | None:
        for fid, vals in self.fields:
            if fid == field_id:
                return vals
        return None

    def matches(self, needle: str) -> bool:
        if (
            needle in self.name.lower()
            or needle in self.first_name.lower()
            or needle in self.last_name.lower()
        ):
            return True
        for _fid, vals in self.fields:
            for value, _enum in vals:
                if isinstance(value, str) and needle in value.lower():
                    return True
        return False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small containers: with a heap of millions of contacts each
    full collection rescans all of them, which made seeding and index builds several times slower."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Account:
    def __init__(
        self,
        account_id: int,
        subdomain: str,
        name: str,
        created_at: int,
        field_offset: int,
        current_user_id: int,
        domain: str | None = None,
    ) -> None:
        self.id = account_id
        self.subdomain = subdomain
        self.domain = domain  # kommo.com, amocrm.ru or amocrm.com; None: the configured base_domain
        self.name = name
        self.created_at = created_at
        self.current_user_id = current_user_id
        self.fields: dict[int, FieldDef] = {f.id: f for f in predefined_fields(field_offset)}
        self.tags: dict[int, Tag] = {}
        self.tags_by_name: dict[str, Tag] = {}
        self.contacts: dict[int, Contact] = {}
        self.live_ids: list[int] = []  # sorted ascending
        self._by_updated: list[tuple[int, int]] | None = None  # sorted (updated_at, id) of live contacts

    def host(self, base_domain: str) -> str:
        """``{subdomain}.{domain}``: where the account lives (``base_domain`` unless created elsewhere)."""
        return f"{self.subdomain}.{self.domain or base_domain}"

    # --- fields --------------------------------------------------------------------------------------------
    def field_by_code(self, code: str) -> FieldDef | None:
        for f in self.fields.values():
            if f.code == code:
                return f
        return None

    # --- contacts ------------------------------------------------------------------------------------------
    def live(self, cid: int) -> Contact | None:
        c = self.contacts.get(cid)
        return c if c is not None and not c.deleted else None

    def add(self, contact: Contact) -> None:
        self.contacts[contact.id] = contact
        if not self.live_ids or contact.id > self.live_ids[-1]:
            self.live_ids.append(contact.id)
        else:
            bisect.insort(self.live_ids, contact.id)
        if self._by_updated is not None:
            bisect.insort(self._by_updated, (contact.updated_at, contact.id))

    def set_updated_at(self, contact: Contact, updated_at: int) -> None:
        if self._by_updated is not None and not contact.deleted:
            self._remove_updated(contact)
            contact.updated_at = updated_at
            bisect.insort(self._by_updated, (contact.updated_at, contact.id))
        else:
            contact.updated_at = updated_at

    def mark_deleted(self, contact: Contact) -> None:
        if contact.deleted:
            return
        if self._by_updated is not None:
            self._remove_updated(contact)
        i = bisect.bisect_left(self.live_ids, contact.id)
        if i < len(self.live_ids) and self.live_ids[i] == contact.id:
            del self.live_ids[i]
        contact.deleted = True

    def mark_restored(self, contact: Contact) -> None:
        if not contact.deleted:
            return
        contact.deleted = False
        bisect.insort(self.live_ids, contact.id)
        if self._by_updated is not None:
            bisect.insort(self._by_updated, (contact.updated_at, contact.id))

    def _remove_updated(self, contact: Contact) -> None:
        assert self._by_updated is not None
        key = (contact.updated_at, contact.id)
        i = bisect.bisect_left(self._by_updated, key)
        if i < len(self._by_updated) and self._by_updated[i] == key:
            del self._by_updated[i]

    def by_updated(self) -> list[tuple[int, int]]:
        if self._by_updated is None:
            with gc_paused():
                self._by_updated = sorted((self.contacts[i].updated_at, i) for i in self.live_ids)
        return self._by_updated

    def updated_range(self, lo: int | None, hi: int | None) -> list[tuple[int, int]]:
        idx = self.by_updated()
        start = 0 if lo is None else bisect.bisect_left(idx, (lo, -1))
        stop = len(idx) if hi is None else bisect.bisect_right(idx, (hi, 1 << 62))
        return idx[start:stop]

    def iter_live(self) -> Iterator[Contact]:
        for cid in self.live_ids:
            yield self.contacts[cid]

    # --- tags ----------------------------------------------------------------------------------------------
    def tag_named(self, name: str, new_id: Iterable[int]) -> Tag:
        tag = self.tags_by_name.get(name.lower())
        if tag is None:
            tag = Tag(next(iter(new_id)), name)
            self.tags[tag.id] = tag
            self.tags_by_name[name.lower()] = tag
        return tag


@dataclass(slots=True)
class ContactChanges:
    """A validated create/update item, not yet applied."""

    id: int | None = None
    request_id: str | None = None
    scalars: dict[str, Any] = field(default_factory=dict)
    fields: list[tuple[int, Values | None]] = field(default_factory=list)  # None = clear that field
    tags_set: list[tuple[int | None, str | None]] | None = None  # _embedded.tags (replace)
    tags_add: list[tuple[int | None, str | None]] = field(default_factory=list)
    tags_del: list[tuple[int | None, str | None]] = field(default_factory=list)


def _err(code: str, path: str, detail: str) -> dict[str, str]:
    return {"code": code, "path": path, "detail": detail}


def _type_err(path: str, type_name: str) -> dict[str, str]:
    return _err("InvalidType", path, f"This value should be of type {type_name}.")


def _choice_err(path: str) -> dict[str, str]:
    return _err("NotSupportedChoice", path, "The value you selected is not a valid choice.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_STRING_KEYS = ("name", "first_name", "last_name")
_INT_KEYS = ("responsible_user_id", "created_by", "updated_by", "created_at", "updated_at")


def parse_contact_item(
    account: Account, item: Any, *, update: bool, errors: list[dict[str, str]]
) -> ContactChanges:
    """Validate one item of a POST/PATCH body; problems are appended to ``errors`` (paths relative to the item)."""
    ch = ContactChanges()
    if not isinstance(item, dict):
        errors.append(_type_err("", "object"))
        return ch
    if update:
        cid = item.get("id")
        if cid is None:
            errors.append(_err("NotBlank", "id", "This value should not be blank."))
        elif not _is_int(cid):
            errors.append(_type_err("id", "int"))
        elif account.live(cid) is None:
            errors.append(_err("NotFound", "id", "Entity not found"))
        else:
            ch.id = cid
    rid = item.get("request_id")
    if rid is not None:
        if isinstance(rid, str):
            ch.request_id = rid
        else:
            errors.append(_type_err("request_id", "string"))
    for key in _STRING_KEYS:
        if key in item:
            if isinstance(item[key], str):
                ch.scalars[key] = item[key]
            else:
                errors.append(_type_err(key, "string"))
    for key in _INT_KEYS:
        if key in item:
            if _is_int(item[key]) and item[key] >= 0:
                ch.scalars[key] = item[key]
            else:
                errors.append(_type_err(key, "int"))
    if "custom_fields_values" in item and item["custom_fields_values"] is not None:
        cfv = item["custom_fields_values"]
        if not isinstance(cfv, list):
            errors.append(_type_err("custom_fields_values", "array"))
        else:
            for i, cf in enumerate(cfv):
                _parse_field(account, cf, f"custom_fields_values.{i}", ch, errors)
    for key, target in (("tags_to_add", ch.tags_add), ("tags_to_delete", ch.tags_del)):
        if key in item:
            parsed = _parse_tags(account, item[key], key, errors)
            if parsed is not None:
                target.extend(parsed)
    if "_embedded" in item:
        emb = item["_embedded"]
        if not isinstance(emb, dict):
            errors.append(_type_err("_embedded", "object"))
        elif "tags" in emb:
            if emb["tags"] is None:
                ch.tags_set = []
            else:
                ch.tags_set = _parse_tags(account, emb["tags"], "_embedded.tags", errors)
    return ch


def _parse_tags(
    account: Account, raw: Any, path: str, errors: list[dict[str, str]]
) -> list[tuple[int | None, str | None]] | None:
    if not isinstance(raw, list):
        errors.append(_type_err(path, "array"))
        return None
    out: list[tuple[int | None, str | None]] = []
    for i, t in enumerate(raw):
        p = f"{path}.{i}"
        if not isinstance(t, dict):
            errors.append(_type_err(p, "object"))
        elif "id" in t and t["id"] is not None:
            if not _is_int(t["id"]):
                errors.append(_type_err(f"{p}.id", "int"))
            elif t["id"] not in account.tags:
                errors.append(_choice_err(f"{p}.id"))
            else:
                out.append((t["id"], None))
        elif "name" in t:
            if not isinstance(t["name"], str) or not t["name"].strip():
                errors.append(_type_err(f"{p}.name", "string"))
            else:
                out.append((None, t["name"].strip()))
        else:
            errors.append(_err("NotBlank", f"{p}.name", "This value should not be blank."))
    return out


def _parse_field(
    account: Account, cf: Any, path: str, ch: ContactChanges, errors: list[dict[str, str]]
) -> None:
    if not isinstance(cf, dict):
        errors.append(_type_err(path, "object"))
        return
    fdef: FieldDef | None = None
    if "field_id" in cf and cf["field_id"] is not None:
        if not _is_int(cf["field_id"]):
            errors.append(_type_err(f"{path}.field_id", "int"))
            return
        fdef = account.fields.get(cf["field_id"])
        if fdef is None:
            errors.append(_choice_err(f"{path}.field_id"))
            return
    elif "field_code" in cf and cf["field_code"] is not None:
        if not isinstance(cf["field_code"], str):
            errors.append(_type_err(f"{path}.field_code", "string"))
            return
        fdef = account.field_by_code(cf["field_code"])
        if fdef is None:
            errors.append(_choice_err(f"{path}.field_code"))
            return
    else:
        errors.append(_err("NotBlank", f"{path}.field_id", "This value should not be blank."))
        return
    if "values" not in cf:
        errors.append(_err("NotBlank", f"{path}.values", "This value should not be blank."))
        return
    raw = cf["values"]
    if raw is None or raw == []:
        ch.fields.append((fdef.id, None))
        return
    if not isinstance(raw, list):
        errors.append(_type_err(f"{path}.values", "array"))
        return
    if fdef.type not in ("multitext", "multiselect") and len(raw) > 1:
        errors.append(
            _err("TooManyValues", f"{path}.values", "This collection should contain 1 element or less.")
        )
        return
    values: Values = []
    before = len(errors)
    for j, v in enumerate(raw):
        vp = f"{path}.values.{j}"
        if not isinstance(v, dict):
            errors.append(_type_err(vp, "object"))
            continue
        parsed = _parse_value(fdef, v, vp, errors)
        if parsed is not None:
            values.append(parsed)
    if len(errors) == before:
        ch.fields.append((fdef.id, values))


def _parse_value(
    fdef: FieldDef, v: dict[str, Any], vp: str, errors: list[dict[str, str]]
) -> tuple[Any, int | None] | None:
    value = v.get("value")
    t = fdef.type
    if t == "multitext":
        if not isinstance(value, str):
            errors.append(_type_err(f"{vp}.value", "string"))
            return None
        if not value.strip():
            errors.append(_err("NotBlank", f"{vp}.value", "This value should not be blank."))
            return None
        ok, enum = _pick_enum(fdef, v, vp, errors)
        if not ok:
            return None
        return (value, (enum or (fdef.enums or [])[0]).id)  # default enum: the first (WORK)
    if t in ("select", "radiobutton", "multiselect"):
        ok, enum = _pick_enum(fdef, v, vp, errors)
        if not ok:
            return None
        if enum is None:
            if isinstance(value, str) and fdef.enum_by_value(value) is not None:
                enum = fdef.enum_by_value(value)
            else:
                errors.append(_choice_err(f"{vp}.value" if value is not None else f"{vp}.enum_id"))
                return None
        assert enum is not None
        return (enum.value, enum.id)
    if t in TEXT_TYPES:
        if not isinstance(value, str):
            errors.append(_type_err(f"{vp}.value", "string"))
            return None
        return (value, None)
    if t == "numeric":
        if _is_int(value) or isinstance(value, float):
            return (str(value), None)
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                errors.append(_type_err(f"{vp}.value", "numeric"))
                return None
            return (value, None)
        errors.append(_type_err(f"{vp}.value", "numeric"))
        return None
    if t == "checkbox":
        if not isinstance(value, bool):
            errors.append(_type_err(f"{vp}.value", "bool"))
            return None
        return (value, None)
    if t in DATE_TYPES:
        if not _is_int(value):
            errors.append(_type_err(f"{vp}.value", "int"))
            return None
        return (value, None)
    errors.append(_choice_err(vp))
    return None


def _pick_enum(
    fdef: FieldDef, v: dict[str, Any], vp: str, errors: list[dict[str, str]]
) -> tuple[bool, FieldEnum | None]:
    """(ok, the enum named by enum_id or enum_code, or None if neither was given); ok False after an error."""
    if v.get("enum_id") is not None:
        if not _is_int(v["enum_id"]):
            errors.append(_type_err(f"{vp}.enum_id", "int"))
            return False, None
        e = fdef.enum_by_id(v["enum_id"])
        if e is None:
            errors.append(_choice_err(f"{vp}.enum_id"))
            return False, None
        return True, e
    if v.get("enum_code") is not None:
        code = v["enum_code"]
        if not isinstance(code, str):
            errors.append(_type_err(f"{vp}.enum_code", "string"))
            return False, None
        e = next((x for x in fdef.enums or () if x.code == code), None)
        if e is None:
            errors.append(_choice_err(f"{vp}.enum_code"))
            return False, None
        return True, e
    return True, None
