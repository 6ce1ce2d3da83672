"""Platform texts turned back into CRM values (``app.sync.reverse``), and which spellings are one value."""

from __future__ import annotations

import pytest

from app.sync.reverse import Unconvertible, crm_value, same
from app.sync.spec import SourceKind, SourceRef


def _ref(kommo_type: str, kind: SourceKind = SourceKind.CUSTOM_FIELD) -> SourceRef:
    return SourceRef(
        kind=kind, field_id=5 if kind is SourceKind.CUSTOM_FIELD else None, type=kommo_type, name="F"
    )


@pytest.mark.parametrize(
    ("kommo_type", "text", "expected"),
    [
        ("text", " as is ", (" as is ", " as is ")),
        ("url", "https://x.io", ("https://x.io", "https://x.io")),
        ("select", "Gold", ("Gold", "Gold")),
        ("numeric", "12", (12, "12")),
        ("numeric", "12,50", (12.5, "12.5")),
        ("checkbox", "1", (True, "1")),
        ("checkbox", "false", (False, "0")),
        ("checkbox", "", (False, "0")),
        ("date", "2026-01-02", (1767312000, "1767312000")),
        ("birthday", "02.01.2026", (1767312000, "1767312000")),
        ("date_time", "2026-01-02 10:30:00", (1767349800, "1767349800")),
        ("text", "", (None, "")),
        ("numeric", "", (None, "")),
    ],
)
def test_platform_texts_become_values_of_the_crm_type(kommo_type: str, text: str, expected: object) -> None:
    assert crm_value(_ref(kommo_type), text) == expected


def test_names_are_written_as_they_are() -> None:
    assert crm_value(_ref("text", SourceKind.FIRST_NAME), "Ann") == ("Ann", "Ann")
    assert crm_value(_ref("text", SourceKind.NAME), "") == ("", "")


@pytest.mark.parametrize(
    ("kommo_type", "text"),
    [("numeric", "lots"), ("checkbox", "maybe"), ("date", "yesterday"), ("multiselect", "a, b")],
)
def test_texts_without_a_crm_value_are_refused(kommo_type: str, text: str) -> None:
    with pytest.raises(Unconvertible):
        crm_value(_ref(kommo_type), text)


def test_spellings_of_one_value_are_the_same_and_other_values_are_not() -> None:
    assert same("number", "12.50", "12.5")
    assert same("date", "02.01.2026", "2026-01-02")
    assert same("bool", "true", "1")
    assert same("bool", "", "0")
    assert not same("number", "12", "13")
    assert not same("string", "Gold", "gold")
    assert not same("date", "2026-01-02", "2026-01-03")
