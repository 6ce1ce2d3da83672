"""A page of ``GET /api/v4/contacts`` read into ``CrmContact``s: the one conversion, and a fast path to it.

A full sync reads pages of 250 contacts at Kommo's full rate, each half a megabyte when contacts carry a
dozen custom fields, and validating them with the pydantic models of ``schemas.py`` was a quarter of the
worker's CPU. So a page is read in two steps:

1. ``plain_listing`` decodes the bytes (orjson) and walks the decoded page once, taking it only where every
   value has exactly the JSON type the models declare (``type(x) is int``, a string or null, ...). That is
   what Kommo sends, and then it builds the contacts directly.
2. Anything else (a number sent as a string, a value the models would coerce or refuse, text orjson cannot
   decode) returns None, and the caller validates the page with the models as before: they coerce what they
   accept, raise the shape error they raised before, and ``listing_of`` converts their dump with the same
   code as step 1. So both paths give the same contacts, and the refusals are the models' alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.connectors.base import CrmContact, CrmFieldValue
from app.connectors.kommo.values import DATE_TYPES, date_text, number_text
from app.connectors.text import clean_text

EMAIL_FIELD_CODE = "EMAIL"

_TEXT_OR_NULL = (str, type(None))
# Escapes and bytes of the characters ``clean_text`` removes (controls, also as the short escapes \b and \f;
# DEL; C1; surrogates): a body without any needs no cleaning. Matches that are not such characters (an
# escaped backslash before "b", a valid surrogate pair, a tab as \u0009) only cost the cleaning.
_MAY_NEED_CLEANING = re.compile(
    rb"\\[bf]|\\u00[0-189][0-9a-fA-F]|\\u007[fF]|\\u[dD][89a-fA-F]|\x7f|\xc2[\x80-\x9f]"
)


@dataclass(frozen=True, slots=True)
class ContactListing:
    contacts: list[CrmContact]
    next_href: str | None  # the page's ``_links.next.href``; None on the last page


class _Odd(Exception):
    """The page is not in the plain shape: the caller validates it with the models."""


def plain_listing(content: bytes) -> ContactListing | None:
    """The page when it is in Kommo's plain shape (see the module's docstring), else None."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    # One search of the whole body tells whether any of its strings may need cleaning; mostly none does, and
    # then the per-string cleaning is skipped (a page holds thousands of strings).
    clean = clean_text if _MAY_NEED_CLEANING.search(content) else _as_is
    try:
        return listing_of(data, clean)
    except _Odd:
        return None


def listing_of(data: Any, clean: Callable[[str], str] = clean_text) -> ContactListing:
    """Contacts and next link of a decoded page, in one pass that checks every value's JSON type as it
    converts; raises ``_Odd`` at the first value not in the plain shape (never for the models' dump)."""
    _need(type(data) is dict and _int_or_null(data.get("_page")))
    links = data.get("_links")
    nxt = None
    if links is not None:
        _need(type(links) is dict)
        for key in ("self", "next", "prev"):
            link = links.get(key)
            _need(link is None or (type(link) is dict and type(link.get("href")) is str))
        nxt = links.get("next")
    embedded = data.get("_embedded")
    contacts: list[CrmContact] = []
    if embedded is not None:
        _need(type(embedded) is dict)
        items = embedded.get("contacts")
        if items is not None:
            _need(type(items) is list)
            contacts = [_contact(c, clean) for c in items]
    return ContactListing(contacts, nxt["href"] if nxt else None)


def contact_of(c: Any) -> CrmContact:
    """One contact of a page (or the models' dump of one) as the sync engine sees it; its text cleaned of
    control characters here, at the boundary (``text.clean_text``)."""
    return _contact(c, clean_text)


def _contact(c: Any, clean: Callable[[str], str]) -> CrmContact:
    _need(type(c) is dict)
    cid, updated_at = c.get("id"), c.get("updated_at")
    name, first, last = c.get("name", ""), c.get("first_name", ""), c.get("last_name", "")
    responsible, created_at, deleted = (
        c.get("responsible_user_id"),
        c.get("created_at"),
        c.get("is_deleted", False),
    )
    _need(type(cid) is int and type(updated_at) is int and type(deleted) is bool)
    _need(
        isinstance(name, _TEXT_OR_NULL)
        and isinstance(first, _TEXT_OR_NULL)
        and isinstance(last, _TEXT_OR_NULL)
    )
    _need(_int_or_null(responsible) and _int_or_null(created_at))
    emails: list[str] = []
    fields: list[CrmFieldValue] = []
    raw_fields = c.get("custom_fields_values")
    if raw_fields is not None:
        _need(type(raw_fields) is list)
        for f in raw_fields:
            _field(f, clean, emails, fields)
    tags: list[str] = []
    embedded = c.get("_embedded")
    if embedded is not None:
        _need(type(embedded) is dict)
        raw_tags = embedded.get("tags")
        if raw_tags is not None:
            _need(type(raw_tags) is list)
            for t in raw_tags:
                _need(type(t) is dict and type(t.get("name")) is str and _int_or_null(t.get("id")))
                _need(isinstance(t.get("color"), _TEXT_OR_NULL))
                tags.append(clean(t["name"]))
    return CrmContact(
        id=cid,
        name=clean(name or ""),
        updated_at=updated_at,
        emails=tuple(emails),
        first_name=clean(first or ""),
        last_name=clean(last or ""),
        tags=tuple(tags),
        deleted=deleted,
        responsible_user_id=responsible,
        created_at=created_at,
        fields=tuple(fields),
    )


def _field(f: Any, clean: Callable[[str], str], emails: list[str], fields: list[CrmFieldValue]) -> None:
    """Checks one custom field and adds its values: as text to ``fields`` (blanks dropped, see
    ``CrmFieldValue``), and to ``emails`` when it is the email field (cleaned, blanks skipped, exact
    duplicates once). Written out flat (no helper calls per value): a page holds thousands of values."""
    if type(f) is not dict:
        raise _Odd
    field_id, code, kind, name = (
        f.get("field_id"),
        f.get("field_code"),
        f.get("field_type"),
        f.get("field_name"),
    )
    if type(field_id) is not int or not (
        (code is None or type(code) is str)
        and (kind is None or type(kind) is str)
        and (name is None or type(name) is str)
    ):
        raise _Odd
    values = f.get("values")
    if values is None:
        return
    if type(values) is not list:
        raise _Odd
    is_email = is_email_field(code, kind, name)
    dated = kind in DATE_TYPES
    texts: list[str] = []
    for v in values:
        if type(v) is not dict:
            raise _Odd
        enum_id, enum_code = v.get("enum_id"), v.get("enum_code")
        value: Any = v.get("value")
        if not ((enum_id is None or type(enum_id) is int) and (enum_code is None or type(enum_code) is str)):
            raise _Odd
        kind_of = type(value)
        if kind_of is str:
            text = clean(value)
            if is_email:
                email = text.strip()
                if email and email not in emails:
                    emails.append(email)
            if dated:
                text = date_text(text)
            if text.strip():
                texts.append(text)
        elif kind_of is bool:
            texts.append("1" if value else "0")
        elif kind_of is int or kind_of is float:
            texts.append(number_text(value))
        elif kind_of is not dict and value is not None:  # an object (legal_entity) or null: no text
            raise _Odd
    if texts:
        fields.append(CrmFieldValue(field_id, tuple(texts)))


def is_email_field(code: str | None, kind: str | None, name: str | None) -> bool:
    """True for the predefined EMAIL field, or an uncoded multitext field named "Email"."""
    if code:
        return code.upper() == EMAIL_FIELD_CODE
    return (kind or "").lower() == "multitext" and (name or "").strip().casefold() == "email"


def _as_is(text: str) -> str:
    return text


def _int_or_null(value: Any) -> bool:
    return value is None or type(value) is int


def _need(ok: bool) -> None:
    if not ok:
        raise _Odd
