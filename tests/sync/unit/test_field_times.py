"""Per-field change times (``app.sync.field_times``): which values a version changed, what a missing or
outdated time falls back to, and a truth read that goes back in time."""

from __future__ import annotations

from app.sync.field_times import AT, BASE, changed_at, first, source_text, source_values, stamp

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
    assert first(100) == {BASE: 100, AT: 100}


def test_a_version_stamps_only_what_it_changed() -> None:
    held = {BASE: 100, "name": 150, AT: 150}
    before = {"name": "Ann", "custom_field:10": "a", "custom_field:12": "x"}
    after = {"name": "Ann", "custom_field:10": "b", "custom_field:13": "new"}  # 12 cleared, 13 set
    times = stamp(held, before, after, 200, 150)
    assert times == {
        BASE: 100,
        "name": 150,
        "custom_field:10": 200,
        "custom_field:12": 200,
        "custom_field:13": 200,
        AT: 200,
    }
    assert held == {BASE: 100, "name": 150, AT: 150}  # not changed in place


def test_times_not_kept_up_to_the_row_s_version_start_again_from_it() -> None:
    """None kept (a row from before them), or kept for an older version (a process of a release without them
    moved the row on): the version held stands for every field."""
    assert stamp(None, {"name": "Ann"}, {"name": "Ann B"}, 200, 150) == {BASE: 150, "name": 200, AT: 200}
    outdated = {BASE: 100, "name": 120, AT: 120}
    assert stamp(outdated, {"name": "Ann"}, {"name": "Ann"}, 200, 150) == {BASE: 150, AT: 200}


def test_a_truth_older_than_what_we_held_caps_every_time() -> None:
    """A contact first stored from a webhook with a forged future version, then read live: no field may keep a
    time later than the truth."""
    forged = first(2_000_000_000)
    same = {"name": "Ann"}
    assert stamp(forged, same, same, 1_700_000_000, 2_000_000_000) == first(1_700_000_000)


def test_a_missing_or_outdated_time_falls_back_to_the_base_then_the_contact_s_version() -> None:
    times = {BASE: 100, "name": 150, AT: 300}
    assert changed_at(times, "name", 300) == 150
    assert changed_at(times, "custom_field:10", 300) == 100
    assert changed_at(times, "name", 310) == 310  # kept for 300: the row is at 310 now
    assert changed_at(None, "name", 300) == 300
    assert changed_at({}, "name", 300) == 300
