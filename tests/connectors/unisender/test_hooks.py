"""Hook delivery parsing and auth verification (format: UNISENDER_HOOK_FORMAT.md)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.connectors.unisender import UnisenderHookParseError, UnsubscribeEvent, parse_hook, verify_hook_auth
from app.connectors.unisender.hooks import MAX_HOOK_BODY_BYTES, MAX_HOOK_EVENTS

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "unisender"
FIXTURE_KEY = "fixture-api-key-5f2c"  # the api_key the signed fixtures were built with


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sign(body: dict[str, object], api_key: str) -> bytes:
    """Build a delivery the way the format describes: serialise with auth=api_key, md5, swap in the hex."""
    raw = json.dumps({"auth": api_key, **body}).encode()
    return raw.replace(api_key.encode(), hashlib.md5(raw).hexdigest().encode(), 1)


# --- verify ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hook_unsubscribe.json", "hook_mixed_events.json", "hook_retry.json"])
def test_signed_fixtures_verify_with_the_right_key_only(name: str) -> None:
    body = fixture(name)
    assert verify_hook_auth(body, FIXTURE_KEY)
    assert not verify_hook_auth(body, FIXTURE_KEY + "x")
    assert not verify_hook_auth(body, "")


def test_any_change_to_the_body_breaks_auth() -> None:
    body = fixture("hook_unsubscribe.json")
    assert not verify_hook_auth(body.replace(b"Ann@Example.com", b"Eve@Example.com"), FIXTURE_KEY)
    assert not verify_hook_auth(body.replace(b"101", b"102"), FIXTURE_KEY)
    tampered = json.loads(body)
    tampered["retry_count"] = 1  # a retry must carry an auth computed over the new body
    assert not verify_hook_auth(json.dumps(tampered).encode(), FIXTURE_KEY)


def test_verify_rejects_missing_or_malformed_auth() -> None:
    assert not verify_hook_auth(b'{"events_by_user": []}', FIXTURE_KEY)
    assert not verify_hook_auth(b'{"auth": "abc", "events_by_user": []}', FIXTURE_KEY)
    assert not verify_hook_auth(b'{"auth": 5}', FIXTURE_KEY)
    assert not verify_hook_auth(b"[1]", FIXTURE_KEY)
    assert not verify_hook_auth(b"\xff\xfe not json", FIXTURE_KEY)
    assert not verify_hook_auth(b" " * (MAX_HOOK_BODY_BYTES + 1), FIXTURE_KEY)


def test_verify_accepts_a_fresh_signature() -> None:
    body = sign({"events_by_user": [], "retry_count": 3}, "k-123")
    assert verify_hook_auth(body, "k-123")
    assert not verify_hook_auth(body, "k-124")


# --- parse -------------------------------------------------------------------------------------------------------


def test_parse_single_unsubscribe() -> None:
    assert parse_hook(fixture("hook_unsubscribe.json")) == [
        UnsubscribeEvent(
            email="ann@example.com",
            list_id=101,
            event_name="unsubscribe",
            event_time=datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC),
            status="unsubscribed",
            source="link",
            login="acme",
        )
    ]


def test_parse_mixed_events_skips_foreign_kinds_and_keeps_order() -> None:
    events = parse_hook(fixture("hook_mixed_events.json"))
    assert [(e.event_name, e.email, e.list_id) for e in events] == [
        ("unsubscribe", "bob@example.com", None),  # null list_id = account-wide
        ("subscribe", "carol@example.com", 202),
        ("unsubscribe", "dave@example.com", 303),  # "303" as a string is accepted
    ]
    assert events[1].event_time == datetime(2026, 11, 23, 10, 2, 3, tzinfo=UTC)


def test_parse_retry_delivery_with_unicode_address() -> None:
    (event,) = parse_hook(fixture("hook_retry.json"))
    assert event.email == "эмма@пример.рф"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("hook_bad_event_time.json", "event_time"),
        ("hook_missing_events_by_user.json", "events_by_user"),
        ("hook_bad_email.json", "email"),
    ],
)
def test_malformed_fixtures_raise_clear_errors(name: str, fragment: str) -> None:
    with pytest.raises(UnisenderHookParseError, match=fragment):
        parse_hook(fixture(name))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'{"events_by_user": {}}',
        b'{"events_by_user": [1]}',
        b'{"events_by_user": [{"events": {}}]}',
        b'{"events_by_user": [{"events": [{"event_name": 1}]}]}',
        b'{"events_by_user": [{"events": [{"event_name": "unsubscribe", "event_data": []}]}]}',
        b'{"events_by_user": [{"events": [{"event_name": "unsubscribe", "event_time": "2026-01-01 00:00:00",'
        b' "event_data": {"email": "a@b.c", "list_id": true}}]}]}',
        b'{"events_by_user": [{"events": [{"event_name": "unsubscribe", "event_time": "2026-01-01 00:00:00",'
        b' "event_data": {"email": "a@b.c", "list_id": -4}}]}]}',
        b"[" * 100_000,
        b"\xff\xfe\x00",
    ],
)
def test_malformed_bodies_raise_parse_error(body: bytes) -> None:
    with pytest.raises(UnisenderHookParseError):
        parse_hook(body)


def test_caps_on_body_size_and_event_count() -> None:
    with pytest.raises(UnisenderHookParseError, match="exceeds"):
        parse_hook(b" " * (MAX_HOOK_BODY_BYTES + 1))
    event = {"event_name": "x", "event_time": "", "event_data": {}}
    too_many = json.dumps({"events_by_user": [{"events": [event] * (MAX_HOOK_EVENTS + 1)}]}).encode()
    with pytest.raises(UnisenderHookParseError, match="more than"):
        parse_hook(too_many)
    empty_users = json.dumps({"events_by_user": [{"events": []}] * (MAX_HOOK_EVENTS + 1)}).encode()
    with pytest.raises(UnisenderHookParseError, match="more than"):
        parse_hook(empty_users)
    at_cap = json.dumps({"events_by_user": [{"events": [event] * MAX_HOOK_EVENTS}]}).encode()
    assert parse_hook(at_cap) == []


# --- properties --------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_name": st.sampled_from(["unsubscribe", "subscribe", "other"]) | json_values,
        "event_time": st.sampled_from(["2026-11-23 10:00:00", "0001-01-01T00:00:00+01:00", "9999-12-31"])
        | json_values,
        "event_data": st.fixed_dictionaries(
            {},
            optional={
                "email": st.emails() | json_values,
                "list_id": st.integers() | st.text(max_size=20) | json_values,
                "status": json_values,
                "source": json_values,
            },
        )
        | json_values,
    },
)
body_like = st.fixed_dictionaries(
    {},
    optional={
        "auth": st.text(max_size=40),
        "events_by_user": st.lists(
            st.fixed_dictionaries(
                {}, optional={"login": json_values, "events": st.lists(event_like, max_size=4)}
            )
            | json_values,
            max_size=3,
        )
        | json_values,
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512) | body_like.map(lambda b: json.dumps(b).encode()))
def test_parse_hook_never_raises_anything_but_parse_error(body: bytes) -> None:
    try:
        events = parse_hook(body)
    except UnisenderHookParseError:
        return
    for event in events:
        assert event.email == event.email.lower()
        assert event.event_name in {"unsubscribe", "subscribe"}
        assert event.event_time.tzinfo is UTC
        assert event.list_id is None or event.list_id > 0


@settings(max_examples=200)
@given(
    body=st.binary(max_size=256) | body_like.map(lambda b: json.dumps(b).encode()), key=st.text(max_size=30)
)
def test_verify_hook_auth_never_raises_and_rejects_unsigned_bodies(body: bytes, key: str) -> None:
    assert verify_hook_auth(body, key) is False  # nothing random is correctly signed


@settings(max_examples=100)
@given(body=body_like, key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=40))
def test_verify_accepts_every_correctly_signed_body(body: dict[str, object], key: str) -> None:
    body.pop("auth", None)
    assert verify_hook_auth(sign(body, key), key)
