"""Checking a sync spec against the providers' fields and lists (``app.sync.spec_check.resolve``): what is
accepted, how it is resolved, and one error per bad entry, naming it."""

from __future__ import annotations

import pytest

from app.connectors.base import CrmFieldDef, EspField, EspList
from app.connectors.unisender.client import UnisenderClient
from app.sync.spec import SourceKind, SpecIn
from app.sync.spec_check import resolve

CRM = [
    CrmFieldDef(1, "Phone", "multitext", "PHONE", ("WORK", "MOB")),
    CrmFieldDef(2, "Email", "multitext", "EMAIL", ("WORK",)),
    CrmFieldDef(10, "City", "text"),
    CrmFieldDef(11, "Age", "numeric"),
    CrmFieldDef(12, "Agreed", "checkbox"),
    CrmFieldDef(13, "Level", "select", None, ("Gold", "Silver")),
    CrmFieldDef(14, "Birthday", "birthday"),
    CrmFieldDef(15, "Company", "legal_entity"),
    CrmFieldDef(16, "Position", "text", "POSITION"),
]
ESP_FIELDS = [EspField(1, "Name", "string"), EspField(2, "city", "string"), EspField(3, "age", "number")]
ESP_LISTS = [EspList(100, "Everyone"), EspList(200, "VIP"), EspList(300, "Beta")]
RESERVED = UnisenderClient.reserved_field_names


def _resolve(raw: dict[str, object]) -> tuple[object, list[tuple[str, str]]]:
    res = resolve(SpecIn.model_validate(raw), CRM, ESP_FIELDS, ESP_LISTS, RESERVED)
    return res, [(e.loc, e.code) for e in res.errors]


def test_a_good_spec_resolves_every_source_target_and_list() -> None:
    res, errors = _resolve(
        {
            "fields": [
                {"source": "name", "target": "Name"},
                {"source": "custom_field:10", "target": "city", "direction": "both"},
                {"source": "custom_field:position", "target": "Job"},
                {"source": ["first_name", "last_name"], "target": "Full", "separator": " "},
                {"source": "custom_field:PHONE", "target": "phone"},
                {"source": "custom_field:11", "target": "age"},
                {"source": "custom_field:14", "target": "Born"},
            ],
            "lists": [
                {"list_id": 100, "all": True},
                {"list_title": "VIP", "tag": "vip"},
                {"list_title": "New one", "tags_any": ["a", "b"]},
            ],
            "create_missing": True,
        }
    )
    assert errors == []
    spec = res.spec  # type: ignore[attr-defined]
    by_target = {f.target: f for f in spec.fields}
    assert by_target["city"].sources[0].field_id == 10
    assert by_target["city"].target_type == "string"
    assert by_target["Job"].sources[0].field_id == 16  # a code, any case
    assert [r.kind for r in by_target["Full"].sources] == [SourceKind.FIRST_NAME, SourceKind.LAST_NAME]
    assert by_target["phone"].target_type == "phone"
    assert res.create_fields == {"Job": "string", "Full": "string", "Born": "date"}  # type: ignore[attr-defined]
    assert res.create_lists == ["New one"]  # type: ignore[attr-defined]
    assert [(r.list_id, r.title) for r in spec.lists] == [(100, "Everyone"), (200, "VIP"), (None, "New one")]
    res.set_list_ids({"New one": 400})  # type: ignore[attr-defined]
    assert spec.lists[2].list_id == 400


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        ({"source": "custom_field:999", "target": "city"}, "unknown_kommo_field"),
        ({"source": "custom_field:NOPE", "target": "city"}, "unknown_kommo_field"),
        ({"source": "surname", "target": "city"}, "unknown_source"),
        ({"source": "custom_field:EMAIL", "target": "city"}, "key_field"),
        ({"source": "custom_field:15", "target": "city"}, "unsupported_type"),
        ({"source": "custom_field:10", "target": "Missing"}, "unknown_unisender_field"),
        ({"source": "custom_field:10", "target": "age"}, "type_mismatch"),
        ({"source": "custom_field:13", "target": "age"}, "type_mismatch"),
        ({"source": ["name", "custom_field:11"], "target": "age"}, "type_mismatch"),
        ({"source": "custom_field:11", "target": "phone"}, "type_mismatch"),
        ({"source": "tags", "target": "email_status"}, "reserved_target"),
        ({"source": "tags", "target": "city", "direction": "to_kommo"}, "invalid_direction"),
        ({"source": ["first_name", "last_name"], "target": "city", "direction": "both"}, "invalid_direction"),
    ],
)
def test_a_bad_field_entry_is_named_with_its_reason(entry: dict[str, object], code: str) -> None:
    _, errors = _resolve({"fields": [{"source": "name", "target": "Name"}, entry]})
    assert errors == [("fields[1]", code)]


def test_a_target_mapped_twice_and_a_bad_new_name_are_refused() -> None:
    _, errors = _resolve(
        {
            "fields": [
                {"source": "name", "target": "Name"},
                {"source": "first_name", "target": "Name"},
                {"source": "first_name", "target": "1bad name"},
            ],
            "create_missing": True,
        }
    )
    assert errors == [("fields[1]", "duplicate_target"), ("fields[2]", "invalid_target")]


@pytest.mark.parametrize(
    ("lists", "errors"),
    [
        ([{"list_id": 999, "all": True}], [("lists[0]", "unknown_list")]),
        ([{"list_title": "Nope", "all": True}], [("lists[0]", "unknown_list")]),
        (
            [{"list_id": 100, "all": True}, {"list_title": "Everyone", "tag": "x"}],
            [("lists[1]", "duplicate_list")],
        ),
        (
            [{"list_id": 100, "tag": "vip"}, {"list_id": 200, "tags_any": ["x", "VIP"]}],
            [("lists[1]", "duplicate_tag")],
        ),
        ([{"list_id": 100, "all": True}, {"list_id": 200, "all": True}], [("lists[1]", "duplicate_segment")]),
        ([{"list_id": 100, "all": True, "tag": "x"}], [("lists[0]", "invalid_rule")]),
        ([{"list_id": 100}], [("lists[0]", "invalid_rule")]),
        ([{"list_id": 100, "list_title": "VIP", "all": True}], [("lists[0]", "invalid_rule")]),
        ([{"list_id": 100, "tags_any": []}], [("lists[0]", "invalid_rule")]),
    ],
)
def test_a_bad_list_entry_is_named_with_its_reason(
    lists: list[dict[str, object]], errors: list[tuple[str, str]]
) -> None:
    assert _resolve({"lists": lists})[1] == errors


def test_every_bad_entry_is_reported_at_once() -> None:
    _, errors = _resolve(
        {
            "fields": [{"source": "custom_field:999", "target": "city"}, {"source": "x", "target": "Name"}],
            "lists": [{"list_id": 999, "all": True}],
        }
    )
    assert [loc for loc, _ in errors] == ["fields[0]", "fields[1]", "lists[0]"]


@pytest.mark.parametrize(
    ("activity", "kinds"),
    [
        (None, ["clicked", "complained", "hard_bounce", "opened", "soft_bounce"]),  # the default
        ([], []),
        (["bounced"], ["hard_bounce", "soft_bounce"]),
        (["delivered", "hard_bounce", "unsubscribed"], ["delivered", "hard_bounce", "unsubscribed"]),
    ],
)
def test_the_activity_kinds_a_spec_writes(activity: list[str] | None, kinds: list[str]) -> None:
    raw: dict[str, object] = {"fields": [{"source": "name", "target": "Name"}]}
    if activity is not None:
        raw["activity"] = activity
    res = resolve(SpecIn.model_validate(raw), CRM, ESP_FIELDS, ESP_LISTS, RESERVED)
    assert res.spec.activity == kinds


def test_an_unknown_activity_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="activity"):
        SpecIn.model_validate({"activity": ["opened", "forwarded"]})
