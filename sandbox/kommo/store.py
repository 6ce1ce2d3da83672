"""Accounts, custom-field definitions, tags and contacts, in memory (payload validation: ``payload.py``).

Contacts of an account live in a dict by id plus a list of the live ids kept sorted (ids only grow, so a
create is an append): a page in id order is a slice, not a sort. A (updated_at, id) index is built lazily
on the first query that needs it and then maintained incrementally.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
    "smart_address",
}
TEXT_TYPES = {"text", "textarea", "url", "streetaddress"}
ENUM_TYPES = {"select", "radiobutton", "multiselect", "multitext"}  # options given when the field is made
DATE_TYPES = {"date", "birthday", "date_time"}
MULTI_VALUE_TYPES = {"multitext", "multiselect", "smart_address"}  # the others take one value
# The parts of a smart_address value, each one value item with its part as enum_code (spec §8.2). Kommo's
# enum texts for them are undocumented: the sandbox gives each enum its code as text.
SMART_ADDRESS_PARTS = ("address_line_1", "address_line_2", "city", "state", "zip", "country")

# Predefined multitext fields. Ids of the first account match the webhook example of Kommo's docs (PHONE 771906, EMAIL
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
class User:
    id: int
    name: str
    email: str
    is_admin: bool = True
    is_active: bool = True


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
        # The user tokens act as (the one who installed the integration) is the account's first user.
        self.users: list[User] = [User(current_user_id, "Admin", f"admin@{subdomain}.example.com")]
        self.seed_field_ids: list[int] | None = None  # the fields seed_contacts(custom_fields=True) made
        self.fields: dict[int, FieldDef] = {f.id: f for f in predefined_fields(field_offset)}
        self.tags: dict[int, Tag] = {}
        self.tags_by_name: dict[str, Tag] = {}
        self.contacts: dict[int, Contact] = {}
        self.live_ids: list[int] = []  # sorted ascending
        self._by_updated: list[tuple[int, int]] | None = None  # sorted (updated_at, id) of live contacts

    def host(self, base_domain: str) -> str:
        """``{subdomain}.{domain}``: where the account lives (``base_domain`` unless created elsewhere)."""
        return f"{self.subdomain}.{self.domain or base_domain}"

    def current_user(self) -> User:
        return next(u for u in self.users if u.id == self.current_user_id)

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
