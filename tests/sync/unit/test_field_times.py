"""Per-field change times (``app.sync.field_times``): which values a version changed, and what a missing
time falls back to."""

from __future__ import annotations

from app.sync.field_times import BASE, changed_at, source_text, source_values, stamp

DATA = {
    "first_name": "Ann",
    "last_name": "",
    "responsible_user_id": 5,
    "fields": {"10": ["a", "b"], "11": []},
}


def test_source_values_are_the_writable_sources_as_text() -> None:
    assert source_values("Ann Lee", DATA) == {
        "name": "Ann Lee",
        "first_name": "Ann",
        "custom_field:10": "a\x1fb",
    }
    assert source_text("custom_field:11", "Ann Lee", DATA) == ""
    assert source_values("", None) == {}


def test_a_first_version_is_the_base_of_every_field() -> None:
    assert stamp(None, None, {"name": "Ann"}, 100, 0) == {BASE: 100}


def test_a_version_stamps_only_what_it_changed() -> None:
    held = {BASE: 100, "name": 150}
    before = {"name": "Ann", "custom_field:10": "a", "custom_field:12": "x"}
    after = {"name": "Ann", "custom_field:10": "b", "custom_field:13": "new"}  # 12 cleared, 13 set
    times = stamp(held, before, after, 200, 150)
    assert times == {
        BASE: 100,
        "name": 150,
        "custom_field:10": 200,
        "custom_field:12": 200,
        "custom_field:13": 200,
    }
    assert held == {BASE: 100, "name": 150}  # not changed in place


def test_a_row_kept_without_times_starts_from_the_version_it_held() -> None:
    assert stamp(None, {"name": "Ann"}, {"name": "Ann B"}, 200, 150) == {BASE: 150, "name": 200}


def test_a_missing_time_falls_back_to_the_base_then_the_contact_s_version() -> None:
    times = {BASE: 100, "name": 150}
    assert changed_at(times, "name", 300) == 150
    assert changed_at(times, "custom_field:10", 300) == 100
    assert changed_at(None, "name", 300) == 300
    assert changed_at({}, "name", 300) == 300
