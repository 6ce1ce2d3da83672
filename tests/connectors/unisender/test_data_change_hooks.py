"""The data-change event (a contact's user fields edited in Unisender, ``contact_data_change``, the sandbox's
name) read from a hook delivery: its values, its identity, and what makes it unrecognised."""

from __future__ import annotations

import json

from app.connectors.unisender.hooks import parse_event, read_delivery


def _event(
    fields: object, email: object = "Ann@X.io", when: str = "2026-11-30 10:00:00"
) -> dict[str, object]:
    data = {"email": email, "fields": fields}
    return {"event_name": "contact_data_change", "event_time": when, "event_data": data}


def test_a_data_change_carries_its_field_values_as_text() -> None:
    event = parse_event(_event({"Plan": "gold", "Score": 12.5, "VIP": True, "Gone": None, "Bad": [1]}))
    assert event.recognised
    assert event.email == "ann@x.io"
    assert dict(event.field_values) == {"Plan": "gold", "Score": "12.5", "VIP": "1", "Gone": ""}
    assert (event.unsubscribes, event.activity, event.subscribed_lists) == (False, None, ())


def test_control_characters_are_cleaned_at_the_boundary() -> None:
    """A NUL cannot be stored in PostgreSQL text: one in a field value or an address failed every write of the
    account's events that carried it, so the reader removes it (and the other controls) as Kommo's readers do."""
    event = parse_event(
        _event({"City\x00": "Ri\x00o\x07", "Notes": "two\nlines"}, email="nul\x00@example.com")
    )
    assert event.recognised
    assert event.email == "nul@example.com"
    assert dict(event.field_values) == {"City": "Rio", "Notes": "two\nlines"}


def test_two_edits_in_one_second_are_two_events_and_a_redelivery_is_one() -> None:
    one = parse_event(_event({"Plan": "gold"}))
    other = parse_event(_event({"Plan": "silver"}))
    assert one.identity() != other.identity()
    assert parse_event(_event({"Plan": "gold"})).identity() == one.identity()


def test_a_data_change_without_an_address_or_fields_is_unrecognised() -> None:
    assert parse_event(_event({"Plan": "x"}, email="not an address")).problem == "no valid email"
    assert parse_event(_event({})).problem == "no fields"
    assert parse_event(_event("Plan=x")).problem == "no fields"
    assert parse_event(_event({})).field_values == {}


def test_other_events_carry_no_field_values() -> None:
    body = {
        "auth": "0" * 32,
        "events_by_user": [
            {
                "login": "acme",
                "events": [
                    {
                        "event_name": "unsubscribe",
                        "event_time": "2026-11-30 10:00:00",
                        "event_data": {"email": "a@x.io", "list_id": 3, "fields": {"Plan": "x"}},
                    },
                    _event({"Plan": "gold"}),
                ],
            }
        ],
    }
    first, second = read_delivery(json.dumps(body).encode()).events
    assert first.field_values == {}
    assert second.field_values == {"Plan": "gold"}
