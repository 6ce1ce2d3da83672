"""A page of contacts read by the fast path (``pages.plain_listing``) gives exactly what the pydantic models
give, and whatever is not in the plain shape goes to the models, which coerce or refuse it as before."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.connectors.kommo.pages import ContactListing, listing_of, plain_listing
from app.connectors.kommo.schemas import KommoContactList


def by_models(body: bytes) -> ContactListing:
    return listing_of(KommoContactList.model_validate_json(body).model_dump(by_alias=True))


def page(*contacts: dict[str, Any], nxt: str | None = "https://a.kommo.com/api/v4/contacts?page=2") -> bytes:
    links: dict[str, Any] = {"self": {"href": "https://a.kommo.com/api/v4/contacts?page=1"}}
    if nxt is not None:
        links["next"] = {"href": nxt}
    return orjson.dumps({"_page": 1, "_links": links, "_embedded": {"contacts": list(contacts)}})


FULL = {
    "id": 7,
    "name": "Ann\x00 Lee",
    "first_name": "Ann",
    "last_name": None,
    "responsible_user_id": 11087555,
    "group_id": 0,
    "created_by": 0,
    "created_at": 1726573127,
    "updated_at": 1726580000,
    "is_deleted": False,
    "closest_task_at": None,
    "custom_fields_values": [
        {
            "field_id": 1,
            "field_name": "Email",
            "field_code": "EMAIL",
            "field_type": "multitext",
            "values": [{"value": "a@example.com", "enum_id": 3, "enum_code": "WORK"}, {"value": " "}],
        },
        {
            "field_id": 2,
            "field_name": "Score",
            "field_code": None,
            "field_type": "numeric",
            "values": [{"value": 3.0}],
        },
        {"field_id": 3, "field_name": "Opt-in", "field_type": "checkbox", "values": [{"value": True}]},
        {"field_id": 4, "field_name": "Born", "field_type": "birthday", "values": [{"value": "15.06.2016"}]},
        {
            "field_id": 5,
            "field_name": "Firm",
            "field_type": "legal_entity",
            "values": [{"value": {"name": "Acme"}}],
        },
        {"field_id": 6, "field_name": "Empty", "field_type": "text", "values": None},
    ],
    "_embedded": {"tags": [{"id": 1, "name": "vip", "color": None}], "companies": []},
}


def test_a_plain_page_is_read_directly_and_equals_the_models() -> None:
    body = page(FULL, {"id": 8, "updated_at": 5})
    fast = plain_listing(body)
    assert fast is not None
    assert fast == by_models(body)
    first = fast.contacts[0]
    assert (first.name, first.emails, first.tags, first.last_name) == (
        "Ann Lee",
        ("a@example.com",),
        ("vip",),
        "",
    )
    assert [f.values for f in first.fields] == [("a@example.com",), ("3",), ("1",), ("1465948800",)]
    assert fast.next_href == "https://a.kommo.com/api/v4/contacts?page=2"
    assert plain_listing(page(FULL, nxt=None)) == by_models(page(FULL, nxt=None))


@pytest.mark.parametrize(
    ("change", "models_accept"),
    [
        ({"id": "7"}, True),  # a number as a string: the models coerce it
        ({"updated_at": 1726580000.0}, True),
        ({"is_deleted": 0}, True),
        ({"responsible_user_id": "11087555"}, True),
        ({"custom_fields_values": [{"field_id": "1", "values": [{"value": "x"}]}]}, True),
        ({"custom_fields_values": [{"field_id": 1, "values": [{"value": "x", "enum_id": "3"}]}]}, True),
        ({"name": 5}, False),  # the models refuse these: the client's shape error, as before
        ({"custom_fields_values": [{"field_id": 1, "values": [{"value": [1, 2]}]}]}, False),
        ({"_embedded": {"tags": [{"id": 1}]}}, False),
        ({"custom_fields_values": "none"}, False),
    ],
)
def test_anything_else_goes_to_the_models(change: dict[str, Any], models_accept: bool) -> None:
    body = page({**FULL, **change})
    assert plain_listing(body) is None
    if not models_accept:
        with pytest.raises(pydantic.ValidationError):
            by_models(body)
        return
    coerced = by_models(body).contacts[0]
    plain = plain_listing(page(FULL))
    assert plain is not None
    # What the models coerced reads as the plain value would.
    assert (coerced.id, coerced.updated_at, coerced.deleted) == (7, 1726580000, False)
    assert coerced.emails == plain.contacts[0].emails or "custom_fields_values" in change


def test_text_orjson_cannot_decode_goes_to_the_models() -> None:
    body = page({**FULL, "name": "Ann Lee"}).replace(b"Ann Lee", b"Ann \\ud800Lee")
    assert b"\\ud800" in body
    assert plain_listing(body) is None
    assert plain_listing(b"<html>") is None
    assert plain_listing(b"[]") is None


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=8))
_value = st.one_of(
    _scalar,
    st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.text(max_size=3), _scalar, max_size=2),
)
_field = st.fixed_dictionaries(
    {"field_id": st.integers(1, 50)},
    optional={
        "field_name": st.one_of(st.none(), st.sampled_from(["Email", "email ", "Phone", "X"])),
        "field_code": st.one_of(st.none(), st.sampled_from(["EMAIL", "email", "PHONE", ""])),
        "field_type": st.one_of(
            st.none(), st.sampled_from(["multitext", "text", "date", "birthday", "numeric"])
        ),
        "values": st.one_of(st.none(), st.lists(st.fixed_dictionaries({"value": _value}), max_size=3)),
    },
)
_contact = st.fixed_dictionaries(
    {"id": st.integers(1, 10**9), "updated_at": st.integers(0, 2**31)},
    optional={
        "name": st.one_of(st.none(), st.text(max_size=10)),
        "first_name": st.one_of(st.none(), st.text(max_size=5)),
        "responsible_user_id": st.one_of(st.none(), st.integers(1, 10**6)),
        "created_at": st.one_of(st.none(), st.integers(0, 2**31)),
        "is_deleted": st.booleans(),
        "custom_fields_values": st.one_of(st.none(), st.lists(_field, max_size=4)),
        "_embedded": st.fixed_dictionaries(
            {},
            optional={
                "tags": st.one_of(st.none(), st.lists(st.fixed_dictionaries({"name": st.text(max_size=6)})))
            },
        ),
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_contact, max_size=4), st.booleans())
def test_random_plain_pages_read_the_same_both_ways(contacts: list[dict[str, Any]], ascii_only: bool) -> None:
    # Text with every kind of character (controls, DEL, C1, surrogates), written as orjson writes it (UTF-8,
    # short escapes) or as PHP's json_encode does (every non-ASCII character escaped): whether a page needed
    # cleaning is decided from its bytes, so both spellings must read as the models read them.
    body = page(*contacts)
    if ascii_only:
        body = json.dumps(orjson.loads(body)).encode()
    fast = plain_listing(body)
    if fast is None:
        # Only text orjson refuses to decode may leave the fast path for a page of these shapes.
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)
        return
    assert fast == by_models(body)


def test_short_escapes_of_controls_are_cleaned() -> None:
    body = page({**FULL, "name": "A\bB\fC"})
    assert b'"A\\bB\\fC"' in body  # JSON's short escapes of backspace and form feed
    fast = plain_listing(body)
    assert fast is not None
    assert fast.contacts[0].name == "ABC" == by_models(body).contacts[0].name
