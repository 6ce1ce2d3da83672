"""Custom-field values, responsible user and creation time: the REST model and the webhook parser map every
field type (spec §8.2) onto the same ``CrmContact`` attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from app.connectors.base import CrmContact, CrmFieldValue, day_month_year_seconds
from app.connectors.kommo.schemas import KommoContact, KommoCustomFieldList, KommoUserList
from app.connectors.kommo.values import date_text, number_text
from app.connectors.kommo.webhooks import parse_webhook
from app.sync.mapping import ContactView, contact_data, desired, typed_days
from app.sync.spec import FieldRule, SourceKind, SourceRef, StoredSpec

FIXTURES = Path(__file__).parents[2] / "fixtures" / "kommo"

# 2024-05-01T00:00:00Z and 2016-06-15T00:00:00Z in unix seconds.
MAY_1 = 1714521600
JUNE_15_2016 = 1465948800


def rest_contact(fields: list[dict[str, Any]] | None, **extra: Any) -> CrmContact:
    body: dict[str, Any] = {
        "id": 7,
        "name": "N",
        "responsible_user_id": 11087555,
        "created_at": 1726573127,
        "updated_at": 1726580000,
        "custom_fields_values": fields,
        **extra,
    }
    return KommoContact.model_validate(body).to_crm_contact()


def rest_field(
    field_id: int, field_type: str, *values: dict[str, Any], code: str | None = None
) -> dict[str, Any]:
    return {
        "field_id": field_id,
        "field_name": f"F{field_id}",
        "field_code": code,
        "field_type": field_type,
        "values": list(values),
    }


def webhook_contact(field_pairs: list[tuple[str, str]], **attrs: str) -> CrmContact:
    prefix = "contacts[update][0]"
    pairs = [(f"{prefix}[id]", "7"), (f"{prefix}[updated_at]", "1726580000")]
    pairs += [(f"{prefix}[{key}]", value) for key, value in attrs.items()]
    pairs += [(f"{prefix}[custom_fields]{key}", value) for key, value in field_pairs]
    [event] = parse_webhook(urlencode(pairs).encode()).events
    assert event.contact is not None
    return event.contact


# One value of every type as Kommo's REST API reads it and as its webhook form carries it (spec §8.2), and
# the text both must give.
CASES: list[tuple[str, list[dict[str, Any]], list[tuple[str, str]], tuple[str, ...]]] = [
    ("text", [{"value": "Recife"}], [("[values][0][value]", "Recife")], ("Recife",)),
    ("textarea", [{"value": "two\nlines"}], [("[values][0][value]", "two\nlines")], ("two\nlines",)),
    ("streetaddress", [{"value": "Rua A, 1"}], [("[values][0][value]", "Rua A, 1")], ("Rua A, 1",)),
    (
        "url",
        [{"value": "https://a.example"}],
        [("[values][0][value]", "https://a.example")],
        ("https://a.example",),
    ),
    ("numeric", [{"value": "1.5"}], [("[values][0][value]", "1.5")], ("1.5",)),
    ("numeric", [{"value": 3.0}], [("[values][0][value]", "3")], ("3",)),
    ("numeric", [{"value": 42}], [("[values][0][value]", "42")], ("42",)),
    ("checkbox", [{"value": True}], [("[values][0][value]", "1")], ("1",)),
    ("checkbox", [{"value": False}], [("[values][0][value]", "0")], ("0",)),
    (
        "select",
        [{"value": "Pro", "enum_id": 17, "enum_code": None}],
        [("[values][0][value]", "Pro"), ("[values][0][enum]", "17")],
        ("Pro",),
    ),
    (
        "radiobutton",
        [{"value": "Referral", "enum_id": 566642}],
        [("[values][value]", "Referral"), ("[values][enum]", "566642")],
        ("Referral",),
    ),
    (
        "multiselect",
        [{"value": "Bags", "enum_id": 1}, {"value": "Shoes", "enum_id": 3}],
        [
            ("[values][0][value]", "Bags"),
            ("[values][0][enum]", "1"),
            ("[values][1][value]", "Shoes"),
            ("[values][1][enum]", "3"),
        ],
        ("Bags", "Shoes"),
    ),
    (
        "multitext",
        [{"value": "+7912", "enum_id": 9, "enum_code": "MOB"}],
        [("[values][0][value]", "+7912"), ("[values][0][enum]", "9")],
        ("+7912",),
    ),
    ("date", [{"value": MAY_1}], [("[values][0]", str(MAY_1))], (str(MAY_1),)),
    ("date", [{"value": "2024-05-01T00:00:00+00:00"}], [("[values][0]", str(MAY_1))], (str(MAY_1),)),
    ("date_time", [{"value": "2024-05-01T03:00:00+03:00"}], [("[values][0]", str(MAY_1))], (str(MAY_1),)),
    # A day typed into a text field is that text by either channel, never a date (the form has no type).
    ("text", [{"value": "15.06.2016"}], [("[values][0][value]", "15.06.2016")], ("15.06.2016",)),
    ("birthday", [{"value": -460252800}], [("[values][0]", "-460252800")], ("-460252800",)),
    (
        "smart_address",
        [
            {"value": "Rua A, 1", "enum_id": 1, "enum_code": "address_line_1"},
            {"value": "Recife", "enum_id": 3, "enum_code": "city"},
            {"value": "BR", "enum_id": 6, "enum_code": "country"},
        ],
        [
            ("[values][0][value]", "Rua A, 1"),
            ("[values][0][enum]", "1"),
            ("[values][1][value]", "Recife"),
            ("[values][1][enum]", "3"),
            ("[values][2][value]", "BR"),
            ("[values][2][enum]", "6"),
        ],
        ("Rua A, 1", "Recife", "BR"),
    ),
]


@pytest.mark.parametrize(
    ("field_type", "rest_values", "form_values", "expected"),
    CASES,
    ids=[f"{case[0]}-{n}" for n, case in enumerate(CASES)],
)
def test_each_type_reads_the_same_by_rest_and_by_webhook(
    field_type: str,
    rest_values: list[dict[str, Any]],
    form_values: list[tuple[str, str]],
    expected: tuple[str, ...],
) -> None:
    by_rest = rest_contact([rest_field(880001, field_type, *rest_values)])
    form = [("[0][id]", "880001"), ("[0][name]", "F")] + [(f"[0]{k}", v) for k, v in form_values]
    by_webhook = webhook_contact(form)

    assert by_rest.fields == (CrmFieldValue(880001, expected),)
    assert by_webhook.fields == by_rest.fields


def test_the_old_birthday_layout_is_kept_as_typed_and_maps_to_the_same_day() -> None:
    """Kommo's 2016 webhooks carried a birthday as ``{value: "15.06.2016"}``, a layout that a text field shares:
    the parser keeps the text, and the mapping, which knows the field is a birthday, reads the same day from it
    as from REST's unix seconds."""
    by_webhook = webhook_contact([("[0][id]", "880001"), ("[0][values][0][value]", "15.06.2016")])
    by_rest = rest_contact([rest_field(880001, "birthday", {"value": JUNE_15_2016})])
    assert by_webhook.fields == (CrmFieldValue(880001, ("15.06.2016",)),)
    assert by_rest.fields == (CrmFieldValue(880001, (str(JUNE_15_2016),)),)

    ref = SourceRef(kind=SourceKind.CUSTOM_FIELD, field_id=880001, type="birthday", name="Born")
    rule = FieldRule(source=["custom_field:880001"], target="Born", sources=[ref], target_type="date")
    spec = StoredSpec(fields=[rule])
    derived = [
        desired(ContactView(7, c.name, c.tags, contact_data(c)), spec, base_list_id=None, users={})["fields"]
        for c in (by_webhook, by_rest)
    ]
    assert derived == [{"Born": "2016-06-15"}, {"Born": "2016-06-15"}]
    # Stored, it is one text whichever channel brought it (two-way change times compare stored texts).
    assert typed_days([by_webhook], spec.date_fields())[0].fields == by_rest.fields


def test_fields_keep_kommos_order_include_email_and_drop_blanks() -> None:
    contact = rest_contact(
        [
            rest_field(3, "multitext", {"value": "+7912", "enum_id": 1, "enum_code": "WORK"}, code="PHONE"),
            rest_field(9, "text", {"value": "  "}),  # blank only: the field is omitted
            rest_field(8, "text", {"value": None}),
            rest_field(
                5,
                "multitext",
                {"value": "a@example.com", "enum_id": 2},
                {"value": ""},
                {"value": "b@example.com", "enum_id": 4},
                code="EMAIL",
            ),
            rest_field(4, "select"),  # no values at all
        ]
    )
    assert contact.fields == (
        CrmFieldValue(3, ("+7912",)),
        CrmFieldValue(5, ("a@example.com", "b@example.com")),
    )
    assert contact.emails == ("a@example.com", "b@example.com")


def test_rest_text_is_cleaned_and_objects_are_skipped() -> None:
    legal_entity = {"value": {"name": "Acme", "entity_type": 2, "vat_id": "1"}}
    contact = rest_contact(
        [rest_field(1, "text", {"value": "Ac\x00me"}), rest_field(2, "legal_entity", legal_entity)]
    )
    assert contact.fields == (CrmFieldValue(1, ("Acme",)),)


def test_rest_contact_without_fields_responsible_or_creation_time() -> None:
    contact = KommoContact.model_validate({"id": 1, "updated_at": 5, "custom_fields_values": None})
    crm = contact.to_crm_contact()
    assert (crm.fields, crm.responsible_user_id, crm.created_at) == ((), None, None)
    crm = rest_contact(None)
    assert (crm.fields, crm.responsible_user_id, crm.created_at) == ((), 11087555, 1726573127)


def test_a_text_field_holding_an_rfc3339_string_stays_text_by_rest() -> None:
    contact = rest_contact([rest_field(1, "text", {"value": "2024-05-01T00:00:00+00:00"})])
    assert contact.fields == (CrmFieldValue(1, ("2024-05-01T00:00:00+00:00",)),)


def test_webhook_responsible_and_creation_time() -> None:
    contact = webhook_contact([], responsible_user_id="11087555", date_create="1726573127")
    assert (contact.responsible_user_id, contact.created_at) == (11087555, 1726573127)
    # [created_at] wins over the older [date_create] name when both are there.
    contact = webhook_contact([], date_create="1", created_at="2")
    assert contact.created_at == 2
    # Unreadable values of these two are unknown, not a refused delivery.
    contact = webhook_contact([], responsible_user_id="", created_at="soon")
    assert (contact.responsible_user_id, contact.created_at) == (None, None)


def test_webhook_fields_without_id_or_values_are_left_out() -> None:
    contact = webhook_contact(
        [
            ("[0][code]", "EMAIL"),
            ("[0][values][0][value]", "x@example.com"),  # no [id]: only counts as an email
            ("[1][id]", "5"),
            ("[1][values][0][value]", " "),
            ("[2][id]", "6"),
            ("[2][values][0][value][name]", "Acme"),  # an object where a value belongs: skipped
            ("[3][id]", "7"),
            ("[3][values][0][value]", "kept"),
        ]
    )
    assert contact.emails == ("x@example.com",)
    assert contact.fields == (CrmFieldValue(7, ("kept",)),)


def test_a_select_option_that_looks_like_an_old_date_keeps_its_text() -> None:
    contact = webhook_contact(
        [("[0][id]", "5"), ("[0][values][0][value]", "01.02.2024"), ("[0][values][0][enum]", "9")]
    )
    assert contact.fields == (CrmFieldValue(5, ("01.02.2024",)),)


def test_captured_update_body_fields() -> None:
    """The recorded update (tests/fixtures/kommo): phone, a radiobutton object, a bare date, two emails."""
    pairs = []
    for line in (FIXTURES / "contact_update.txt").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        pairs.append((key, value))
    [event] = parse_webhook(urlencode(pairs).encode()).events
    assert event.contact is not None
    assert event.contact.responsible_user_id == 11087555
    assert event.contact.created_at == 1726573127
    assert event.contact.fields == (
        CrmFieldValue(771906, ("+7 912 000-00-00",)),
        CrmFieldValue(880001, ("Referral",)),
        CrmFieldValue(880002, ("1729717200",)),
        CrmFieldValue(771908, ("ivan@example.com", " Ivan.Private@Example.org ")),
    )


def test_captured_add_body_from_wire_bytes() -> None:
    [event] = parse_webhook((FIXTURES / "contact_add.wire.txt").read_bytes()).events
    assert event.contact is not None
    assert (event.contact.responsible_user_id, event.contact.created_at) == (11087123, 1726573127)
    assert event.contact.fields == (
        CrmFieldValue(771906, ("1234567890",)),
        CrmFieldValue(771908, ("john@example.com",)),
    )


# --- value helpers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1714521600", "1714521600"),
        ("15.06.2016", str(JUNE_15_2016)),
        ("2024-05-01T00:00:00+00:00", str(MAY_1)),
        ("2024-05-01T00:00:00Z", str(MAY_1)),
        ("2024-05-01T00:00:00", str(MAY_1)),  # no offset: UTC
        ("31.02.2024", "31.02.2024"),  # no such day: kept as typed
        ("tomorrow", "tomorrow"),
        ("2024-13-01T00:00:00+00:00", "2024-13-01T00:00:00+00:00"),  # no such month: kept
    ],
)
def test_date_text(text: str, expected: str) -> None:
    assert date_text(text) == expected


def test_day_month_year_and_number_text() -> None:
    assert day_month_year_seconds("15.06.2016") == str(JUNE_15_2016)
    assert day_month_year_seconds("2016-06-15") is None
    assert [number_text(v) for v in (3, 3.0, 1.5, -2.0, 0.1)] == ["3", "3", "1.5", "-2", "0.1"]


# --- definitions and users pages ---------------------------------------------------------------------------------


def test_custom_field_definitions_page() -> None:
    page = KommoCustomFieldList.model_validate(
        {
            "_total_items": 2,
            "_page": 1,
            "_page_count": 1,
            "_links": {"self": {"href": "https://acme.kommo.com/api/v4/contacts/custom_fields?page=1"}},
            "_embedded": {
                "custom_fields": [
                    {
                        "id": 771908,
                        "name": "Email",
                        "type": "multitext",
                        "account_id": 1,
                        "code": "EMAIL",
                        "sort": 6,
                        "is_api_only": False,
                        "enums": [
                            {"id": 1, "value": "WORK", "sort": 2},
                            {"id": 2, "value": "PRIV", "sort": 4},
                        ],
                        "group_id": None,
                        "required_statuses": [],
                        "is_deletable": False,
                        "is_predefined": True,
                        "entity_type": "contacts",
                        "remind": None,
                    },
                    {"id": 880001, "name": "Pl\x00an", "type": "select", "code": None, "enums": None},
                ]
            },
        }
    )
    assert [f.to_field_def() for f in page.items()] == [
        _def(771908, "Email", "multitext", "EMAIL", ("WORK", "PRIV")),
        _def(880001, "Plan", "select", None, ()),
    ]
    assert page.links.next is None


def test_users_page() -> None:
    page = KommoUserList.model_validate(
        {
            "_total_items": 1,
            "_page": 1,
            "_page_count": 1,
            "_links": {"self": {"href": "https://acme.kommo.com/api/v4/users"}},
            "_embedded": {
                "users": [
                    {
                        "id": 123123,
                        "name": "Example user",
                        "email": "user@example.com",
                        "rights": {"is_admin": False},
                    }
                ]
            },
        }
    )
    assert [(u.to_user().id, u.to_user().name) for u in page.items()] == [(123123, "Example user")]


def _def(fid: int, name: str, type_: str, code: str | None, options: tuple[str, ...]) -> object:
    from app.connectors.base import CrmFieldDef

    return CrmFieldDef(id=fid, name=name, type=type_, code=code, options=options)
