"""The pure mapping from CRM contacts to what the email platform should hold."""

from __future__ import annotations

from typing import Any

import pytest

from app.connectors.base import CrmContact, CrmFieldValue
from app.sync.contacts_repo import Owner
from app.sync.held import held_state, held_value, platform_entry, platform_record
from app.sync.mapping import (
    CompiledSpec,
    ContactView,
    already_held,
    contact_data,
    contact_emails,
    desired,
    difference,
    has_day_texts,
    keep_phone,
    normalize_email,
    payload_hash,
    typed_days,
)
from app.sync.service import Derivation
from app.sync.spec import Direction, FieldRule, ListRule, SourceKind, SourceRef, StoredSpec, default_spec


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ann@Example.ORG ", "ann@example.org"),
        ("a.b+tag@sub.example.co", "a.b+tag@sub.example.co"),
        ("no-at-sign.example.org", None),
        ("two@@example.org", None),
        ("a@localhost", None),  # no dot in the domain
        ("a b@example.org", None),
        ("a@-example.org", None),
        ("<a@example.org>", None),
        ("", None),
        ("x" * 65 + "@example.org", None),  # local part over 64
        ("a@" + "b" * 250 + ".org", None),  # over 254 in all
    ],
)
def test_normalize_email(raw: str, expected: str | None) -> None:
    assert normalize_email(raw) == expected


def test_contact_emails_are_distinct_valid_and_in_first_seen_order() -> None:
    raw = ["B@x.io", "junk", "a@x.io", "b@X.io ", "", "c@x.io"]
    assert contact_emails(raw) == ["b@x.io", "a@x.io", "c@x.io"]
    assert contact_emails(()) == []


def _cf(field_id: int, type_: str, target: str, target_type: str = "string") -> FieldRule:
    ref = SourceRef(kind=SourceKind.CUSTOM_FIELD, field_id=field_id, type=type_, name=f"F{field_id}")
    return FieldRule(
        source=[f"custom_field:{field_id}"], target=target, sources=[ref], target_type=target_type
    )


def _std(kind: SourceKind, target: str, target_type: str = "string") -> FieldRule:
    ref = SourceRef(kind=kind, type="date_time" if kind is SourceKind.CREATED_AT else "text", name=kind.value)
    return FieldRule(source=[kind.value], target=target, sources=[ref], target_type=target_type)


# 2024-05-01 00:00:00 UTC and 2024-05-01 13:45:10 UTC
MIDNIGHT, AFTERNOON = 1714521600, 1714571110
CONTACT = CrmContact(
    id=7,
    name="Ivan Petrov",
    updated_at=1,
    first_name="Ivan",
    last_name="Petrov",
    tags=("vip", "Beta", "alpha"),
    responsible_user_id=42,
    created_at=AFTERNOON,
    fields=(
        CrmFieldValue(1, ("Moscow",)),  # text
        CrmFieldValue(2, ("1.50",)),  # numeric
        CrmFieldValue(3, ("1",)),  # checkbox
        CrmFieldValue(4, ("Gold",)),  # select
        CrmFieldValue(5, ("Red", "Blue")),  # multiselect
        CrmFieldValue(6, (str(MIDNIGHT),)),  # date
        CrmFieldValue(7, (str(AFTERNOON),)),  # date_time
        CrmFieldValue(8, (str(MIDNIGHT),)),  # birthday
        CrmFieldValue(9, ("8 (912) 555-01-02", "+1 555 0100")),  # multitext PHONE
        CrmFieldValue(10, ("Main st 1", "Moscow", "101000")),  # smart_address
        CrmFieldValue(11, ("https://x.io",)),  # url
        CrmFieldValue(12, ("42",)),  # numeric, integral
        CrmFieldValue(13, ("one\ntwo",)),  # textarea
        CrmFieldValue(14, ("Left",)),  # radiobutton
    ),
)
VIEW = ContactView(7, CONTACT.name, CONTACT.tags, contact_data(CONTACT))
USERS = {42: "Anna Manager"}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (_std(SourceKind.NAME, "Name"), "Ivan Petrov"),
        (_std(SourceKind.FIRST_NAME, "First"), "Ivan"),
        (_std(SourceKind.LAST_NAME, "Last"), "Petrov"),
        (_std(SourceKind.RESPONSIBLE_USER, "Manager"), "Anna Manager"),
        (_std(SourceKind.TAGS, "Tags"), "alpha, Beta, vip"),
        (_std(SourceKind.CREATED_AT, "Created", "date"), "2024-05-01"),
        (_std(SourceKind.CREATED_AT, "CreatedText"), "2024-05-01 13:45:10"),
        (_cf(1, "text", "City"), "Moscow"),
        (_cf(2, "numeric", "Score", "number"), "1.5"),
        (_cf(12, "numeric", "Age", "number"), "42"),
        (_cf(3, "checkbox", "Agreed", "bool"), "1"),
        (_cf(4, "select", "Level"), "Gold"),
        (_cf(14, "radiobutton", "Side"), "Left"),
        (_cf(5, "multiselect", "Colors"), "Red, Blue"),
        (_cf(6, "date", "Day", "date"), "2024-05-01"),
        (_cf(7, "date_time", "Seen", "date"), "2024-05-01"),
        (_cf(7, "date_time", "SeenText", "text"), "2024-05-01 13:45:10"),
        (_cf(8, "birthday", "Birthday", "date"), "2024-05-01"),
        (_cf(9, "multitext", "Phones"), "8 (912) 555-01-02, +1 555 0100"),
        (_cf(10, "smart_address", "Address", "text"), "Main st 1, Moscow, 101000"),
        (_cf(11, "url", "Site"), "https://x.io"),
        (_cf(13, "textarea", "Notes", "text"), "one\ntwo"),
    ],
)
def test_every_source_type_converts_to_its_target(rule: FieldRule, expected: str) -> None:
    payload = desired(VIEW, StoredSpec(fields=[rule]), base_list_id=None, users=USERS)
    assert payload["fields"] == {rule.target: expected}


def test_empty_values_clear_and_an_unchecked_checkbox_is_zero() -> None:
    bare = ContactView(8, "", (), contact_data(CrmContact(id=8, name="", updated_at=1)))
    spec = StoredSpec(
        fields=[
            _cf(1, "text", "City"),
            _cf(3, "checkbox", "Agreed", "bool"),
            _cf(6, "date", "Day", "date"),
            _std(SourceKind.RESPONSIBLE_USER, "Manager"),
            _std(SourceKind.TAGS, "Tags"),
        ]
    )
    payload = desired(bare, spec, base_list_id=None, users=USERS)
    assert payload["fields"] == {"City": "", "Agreed": "0", "Day": "", "Manager": "", "Tags": ""}


def test_a_join_skips_empty_parts_and_uses_its_separator() -> None:
    refs = [_std(SourceKind.FIRST_NAME, "x").sources[0], _cf(99, "text", "x").sources[0]]
    refs.append(_std(SourceKind.LAST_NAME, "x").sources[0])
    rule = FieldRule(
        source=["first_name", "custom_field:99", "last_name"],
        target="Full",
        separator=" / ",
        sources=refs,
        target_type="string",
    )
    assert desired(VIEW, StoredSpec(fields=[rule]), base_list_id=None, users={})["fields"] == {
        "Full": "Ivan / Petrov"
    }


def test_phone_goes_to_the_phone_channel_in_international_form() -> None:
    payload = desired(
        VIEW, StoredSpec(fields=[_cf(9, "multitext", "phone", "phone")]), base_list_id=None, users={}
    )
    assert (payload["fields"], payload["phone"]) == ({}, "+89125550102")


def test_a_phone_the_contact_lost_is_kept_not_cleared() -> None:
    wanted = {"delete": False, "fields": {}, "phone": "", "lists": [], "excluded": [], "unsubscribed": []}
    held = {**wanted, "phone": "+15550100"}
    assert keep_phone(wanted, held)["phone"] == "+15550100"
    assert keep_phone(wanted, None) == wanted
    assert keep_phone({"delete": True}, held) == {"delete": True}


def test_lists_follow_tags_case_insensitively_and_name_the_others_to_leave() -> None:
    spec = StoredSpec(
        lists=[
            ListRule(base=True, all=True),
            ListRule(list_id=20, tag="VIP"),
            ListRule(list_id=30, tags_any=["gamma", "ALPHA"]),
            ListRule(list_id=40, tag="nobody"),
        ]
    )
    assert CompiledSpec.of(spec, base_list_id=10, users={}).lists_for(["vip", "alpha"]) == (
        [10, 20, 30],
        [40],
    )
    assert CompiledSpec.of(spec, base_list_id=None, users={}).lists_for([]) == (
        [],
        [20, 30, 40],
    )  # no base list yet: only mapped ones count
    payload = desired(VIEW, spec, base_list_id=10, users={}, unsubscribed_lists=frozenset({20, 40}))
    # An address never joins nor leaves a list it unsubscribed from: the mark stays.
    assert (payload["lists"], payload["excluded"], payload["unsubscribed"]) == ([10, 30], [], [20, 40])


def test_no_owner_means_delete() -> None:
    assert desired(None, default_spec(), base_list_id=10, users={}) == {"delete": True}


def test_the_default_spec_is_the_mirror_of_before() -> None:
    payload = desired(VIEW, default_spec(), base_list_id=10, users={})
    assert payload == {
        "delete": False,
        "fields": {"Name": "Ivan Petrov"},
        "phone": "",
        "lists": [10],
        "excluded": [],
        "unsubscribed": [],
    }


def test_the_hash_ignores_empty_fields_and_lists_to_leave_but_not_values_or_memberships() -> None:
    base = {
        "delete": False,
        "fields": {"Name": "A", "City": ""},
        "phone": "",
        "lists": [1],
        "excluded": [2],
        "unsubscribed": [],
    }
    h = payload_hash(base)
    assert h == payload_hash({**base, "fields": {"Name": "A"}})  # a new empty field sends nothing
    assert h == payload_hash({**base, "excluded": []})
    assert h != payload_hash({**base, "fields": {"Name": "A", "City": "X"}})
    assert h != payload_hash({**base, "lists": [1, 2]})
    assert h != payload_hash({**base, "unsubscribed": [3]})
    assert h != payload_hash({**base, "phone": "+1"})
    assert payload_hash({"delete": True}) != h
    assert len(h) == 64


def test_difference_names_each_field_and_list() -> None:
    held = {"delete": False, "fields": {"Name": "A", "City": "X"}, "phone": "", "lists": [1, 2]}
    wanted = {
        "delete": False,
        "fields": {"Name": "A", "City": "", "Age": "3"},
        "phone": "+1",
        "lists": [1, 3],
        "excluded": [2, 4],
    }
    diff = difference(held, wanted)
    assert diff.fields == {"City": ("X", ""), "Age": ("", "3")}
    assert (diff.join, diff.leave, diff.phone, diff.delete) == ([3], [2], ("", "+1"), False)
    assert difference(held, {"delete": True}).delete
    assert difference(None, {"delete": True}).empty
    assert difference(held, held).empty
    # A list the spec no longer maps keeps its members; an address the platform lost is created again.
    assert difference(held, {**held, "lists": [1]}).empty
    assert difference({"delete": True}, {**held, "fields": {}, "lists": []}).create


def test_already_held_compares_with_what_was_last_accepted() -> None:
    wanted = {
        "delete": False,
        "fields": {"Name": "A", "City": ""},
        "lists": [1],
        "excluded": [],
        "unsubscribed": [],
    }
    pushed = {"delete": False, "fields": {"Name": "A"}, "lists": [1, 9]}
    assert already_held(wanted, "h", pushed, owned=True)
    assert not already_held({**wanted, "fields": {"Name": "B"}}, "h", pushed, owned=True)
    assert not already_held(wanted, None, None, owned=True)  # never pushed
    assert already_held({"delete": True}, None, None, owned=False)  # never there
    assert already_held(wanted, payload_hash(wanted), None, owned=True)  # pushed before payloads were kept


def test_only_the_contacts_first_address_carries_the_phone() -> None:
    view = ContactView(7, CONTACT.name, (), contact_data(CONTACT), ["a@x.io", "b@x.io"])
    spec = StoredSpec(fields=[_cf(9, "multitext", "phone", "phone")])
    assert desired(view, spec, email="a@x.io", base_list_id=None, users={})["phone"] == "+89125550102"
    assert desired(view, spec, email="b@x.io", base_list_id=None, users={})["phone"] == ""


def test_the_hash_is_the_one_stored_before_the_faster_encoder() -> None:
    """Hashes already in the outbox were taken over the standard library's JSON; they must still match."""
    import hashlib
    import json

    payload = {
        "delete": False,
        "fields": {"Name": "Мария Ивановна", "Plan": "Pro", "Empty": ""},
        "phone": "+79261232323",
        "lists": [3, 10],
        "unsubscribed": [7],
    }
    key = {"f": {"Name": "Мария Ивановна", "Plan": "Pro"}, "p": "+79261232323", "l": [3, 10], "u": [7]}
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert payload_hash(payload) == hashlib.sha256(blob.encode()).hexdigest()


def _told(**values: str) -> dict[str, Any]:
    """``platform_values`` holding these values (set at an unknown time)."""
    return {target: platform_entry(value, 0) for target, value in values.items()}


def test_a_field_the_platform_owns_is_never_pushed() -> None:
    """A ``to_kommo`` rule: the CRM's value of the field is not part of the desired state (no import column, so
    a CRM edit leaves the platform's value alone), whatever the platform holds of it."""
    owned = _cf(1, "text", "City").model_copy(update={"direction": Direction.TO_KOMMO})
    compiled = CompiledSpec.of(
        StoredSpec(fields=[_std(SourceKind.NAME, "Name"), owned]), base_list_id=10, users={}
    )
    assert compiled.owned == ("City",)
    assert compiled.reader("City") is not None  # to tell whether the CRM holds a platform value already
    wanted = compiled.desired(VIEW)
    assert wanted["fields"] == {"Name": "Ivan Petrov"}  # the CRM's "Moscow" is not sent
    pushed = {**wanted, "fields": {"Name": "Ivan Petrov"}}
    held = held_state(pushed, _told(City="Paris"))
    assert held is not None
    assert held_value(held, "City") == "Paris"
    assert difference(held, wanted).empty  # nothing to push
    assert already_held(wanted, payload_hash(pushed), held, owned=True)


def test_what_the_platform_holds_is_the_latest_record_of_each_field() -> None:
    pushed = {"delete": False, "fields": {"Name": "A", "City": "Rome"}, "phone": "+1", "lists": [1]}
    held = held_state(pushed, _told(City="Paris", Plan="gold", phone="+2"))
    assert held is not None
    # The push record's own entry is the later one (a change of a pushed field removes it from the other place).
    assert (held_value(held, "City"), held_value(held, "Plan"), held_value(held, "phone")) == (
        "Rome",
        "gold",
        "+1",
    )
    assert held_value({**held, "phone": ""}, "phone") == "+2"
    assert held_value(held, "Nothing") is None
    assert held_state(None, _told(City="Paris")) is None  # nothing pushed
    assert held_value(held_state({"delete": True}, _told(City="Paris")), "City") is None
    assert held_state(pushed, None) == pushed


def test_a_rule_that_stops_being_owned_pushes_the_crm_value_only_where_it_differs() -> None:
    pushing = CompiledSpec.of(
        StoredSpec(fields=[_std(SourceKind.NAME, "Name"), _cf(1, "text", "City")]), base_list_id=10, users={}
    ).desired(VIEW)
    pushed = {**pushing, "fields": {"Name": "Ivan Petrov"}}  # City never pushed: the platform owned it
    assert difference(held_state(pushed, _told(City="Paris")), pushing).fields == {
        "City": ("Paris", "Moscow")
    }
    assert difference(held_state(pushed, _told(City="Moscow")), pushing).empty
    cleared = {**pushing, "fields": {"Name": "Ivan Petrov", "City": ""}}  # an empty CRM value clears it
    assert difference(held_state(pushed, _told(City="Paris")), cleared).fields == {"City": ("Paris", "")}


def test_a_phone_the_platform_owns_is_neither_sent_nor_kept_from_before() -> None:
    owned = _cf(9, "multitext", "phone", "phone").model_copy(update={"direction": Direction.TO_KOMMO})
    compiled = CompiledSpec.of(StoredSpec(fields=[owned]), base_list_id=None, users={})
    assert (compiled.phone, compiled.owned) == (None, ("phone",))
    assert compiled.desired(VIEW)["phone"] == ""  # an empty phone cell: the platform's phone stays
    # A phone the contact lost is otherwise kept from the push record (``keep_phone``) and sent again: not one
    # the platform owns.
    owner = Owner(7, VIEW.name, 1, list(VIEW.tags), dict(VIEW.data), ["a@x.io"])
    held = {"delete": False, "fields": {}, "phone": "+15550100", "lists": []}
    assert Derivation(None, {}, compiled).payload("a@x.io", owner, frozenset(), held)["phone"] == ""
    mine = CompiledSpec.of(
        StoredSpec(fields=[_cf(99, "text", "phone", "phone")]), base_list_id=None, users={}
    )
    assert Derivation(None, {}, mine).payload("a@x.io", owner, frozenset(), held)["phone"] == "+15550100"


def test_the_platform_record_follows_the_spec_in_force() -> None:
    """An owned target still in the push record (pushed before its rule became ``to_kommo``) moves into
    ``platform_values``, so the next push, which no longer carries it, does not lose it; the entry of a target
    no longer owned goes once the push record holds it; the push record of a deletion moves nothing (an
    accepted deletion clears the values where it is recorded, ``outbox_repo.mark_pushed``)."""
    pushed = {"delete": False, "fields": {"Name": "A", "City": "Rome"}, "phone": "+1", "lists": [1]}
    assert platform_record(pushed, None, ("City",)) == _told(City="Rome")
    assert platform_record(pushed, _told(City="Paris"), ("City",)) == _told(City="Rome")  # the later
    assert platform_record(pushed, None, ("phone",)) == _told(phone="+1")
    not_yet = {**pushed, "fields": {"Name": "A"}}  # the rule turned to pushing, City not pushed yet
    assert platform_record(not_yet, _told(City="Paris"), ()) == _told(City="Paris")  # still what it holds
    assert platform_record(pushed, _told(City="Paris", Plan="x"), ()) == _told(Plan="x")
    assert platform_record({"delete": True}, _told(City="Paris"), ("City",)) == _told(City="Paris")
    assert platform_record(pushed, None, ()) is None


def test_typed_days_turn_a_date_fields_day_text_into_seconds_and_leave_other_fields_alone() -> None:
    typed = CrmContact(
        id=7,
        name="N",
        updated_at=1,
        fields=(
            CrmFieldValue(8, ("01.05.2024",)),  # a birthday in the old webhook layout
            CrmFieldValue(1, ("01.05.2024",)),  # a text field holding a typed day
            CrmFieldValue(6, (str(MIDNIGHT),)),  # a date already in seconds
        ),
    )
    plain = CrmContact(id=9, name="M", updated_at=1, fields=(CrmFieldValue(1, ("Moscow",)),))
    assert has_day_texts([plain, typed])
    assert not has_day_texts([plain])
    out = typed_days([typed, plain], {8, 6})
    assert out[0].fields == (
        CrmFieldValue(8, (str(MIDNIGHT),)),
        CrmFieldValue(1, ("01.05.2024",)),
        CrmFieldValue(6, (str(MIDNIGHT),)),
    )
    assert out[1] is plain  # nothing to change: the same object


def test_a_specs_date_fields_are_its_mapped_date_birthday_and_date_time_fields() -> None:
    spec = StoredSpec(
        fields=[
            _cf(6, "date", "Day", "date"),
            _cf(7, "date_time", "Seen", "text"),
            _cf(8, "birthday", "Birthday", "date"),
            _cf(1, "text", "City"),
            _std(SourceKind.CREATED_AT, "Created", "date"),
        ]
    )
    assert spec.date_fields() == {6, 7, 8}
