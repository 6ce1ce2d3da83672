"""Hook deliveries in every layout Unisender posts, and the ``auth`` check over the raw bytes.

Fixtures: tests/fixtures/unisender/README.md says which bodies are captured and which are constructed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.connectors.unisender import HookEvent, UnisenderHookParseError, read_delivery, verify_hook_auth
from app.connectors.unisender.hooks import MAX_HOOK_BODY_BYTES, MAX_HOOK_EVENTS, parse_event

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "unisender"
FIXTURE_KEY = "fixture-api-key-5f2c"  # the api_key the constructed fixtures were signed with
CAPTURED_SHA256 = "faa6cf4db624f3ac2bf1b3702bb1fd6ad2a6515c65f3938b97c6eecb9a69606a"
SIGNED = [
    "classic_captured_resigned.json",
    "classic_unsubscribe.json",
    "classic_unsubscribe_retry.json",
    "classic_batch.json",
    "classic_unknown_events_only.json",
    "flat_unsubscribe.json",
    "go_layout.json",
    "unknown_layout.json",
]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def sign(body: dict[str, object], api_key: str) -> bytes:
    """A delivery signed by the rule: md5 of the text with the key in place of the auth value."""
    placeholder = "#" * 32
    text = json.dumps({"auth": placeholder, **body}, separators=(",", ":"))
    digest = hashlib.md5(text.replace(placeholder, api_key, 1).encode()).hexdigest()
    return text.replace(placeholder, digest, 1).encode()


def summary(event: HookEvent) -> tuple[object, ...]:
    return (event.name, event.email, event.list_ids, event.status, event.campaign_id, event.recognised)


# --- auth --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SIGNED)
def test_signed_fixtures_verify_with_the_right_key_only(name: str) -> None:
    body = fixture(name)
    assert verify_hook_auth(body, FIXTURE_KEY)
    assert not verify_hook_auth(body, FIXTURE_KEY + "x")
    assert not verify_hook_auth(body, "")


def test_the_captured_body_is_byte_exact_and_its_unknown_key_does_not_verify() -> None:
    captured = fixture("classic_captured.json")
    assert len(captured) == 294
    assert b"\n" not in captured
    # The bytes of the published capture: a reformatted copy would no longer be the real layout.
    assert hashlib.sha256(captured).hexdigest() == CAPTURED_SHA256
    assert json.loads(captured)["auth"] == "9cba62a05e71a4456958c65a72b4be9d"
    assert not verify_hook_auth(captured, FIXTURE_KEY)
    # The re-signed copy differs in the auth value only.
    resigned = fixture("classic_captured_resigned.json")
    assert captured.replace(b"9cba62a05e71a4456958c65a72b4be9d", json.loads(resigned)["auth"].encode()) == (
        resigned
    )


def test_auth_covers_the_raw_bytes_not_a_reserialization() -> None:
    body = fixture("go_layout.json")
    assert b"https:\\/\\/example.com" in body  # PHP escapes slashes; json.dumps would not
    same_json = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert json.loads(same_json) == json.loads(body)
    assert not verify_hook_auth(same_json, FIXTURE_KEY)
    spaced = json.dumps(json.loads(fixture("classic_batch.json"))).encode()
    assert not verify_hook_auth(spaced, FIXTURE_KEY)


def test_any_change_to_the_body_breaks_auth() -> None:
    body = fixture("classic_unsubscribe.json")
    assert not verify_hook_auth(body.replace(b"kate@example.com", b"eve@example.com"), FIXTURE_KEY)
    assert not verify_hook_auth(body.replace(b"101", b"102"), FIXTURE_KEY)
    # A redelivery needs its own auth: adding retry_count to the first attempt's body breaks it.
    assert not verify_hook_auth(body[:-1] + b',"retry_count":1}', FIXTURE_KEY)


def test_unsigned_or_malformed_auth_is_refused() -> None:
    body = json.loads(fixture("classic_unsubscribe.json"))
    del body["auth"]
    assert not verify_hook_auth(json.dumps(body).encode(), FIXTURE_KEY)
    assert not verify_hook_auth(b'{"auth": "abc", "events_by_user": []}', FIXTURE_KEY)
    assert not verify_hook_auth(b'{"auth": 5}', FIXTURE_KEY)
    assert not verify_hook_auth(b"[1]", FIXTURE_KEY)
    assert not verify_hook_auth(b"\xff\xfe not json", FIXTURE_KEY)
    assert not verify_hook_auth(b" " * (MAX_HOOK_BODY_BYTES + 1), FIXTURE_KEY)


def test_a_signed_body_that_is_not_json_still_verifies() -> None:
    """A garbled but signed delivery is Unisender's: the receiver keeps it instead of refusing it."""
    text = '{"auth":"' + "#" * 32 + '","events_by_user":[{"login":"a","events":[{"event_name":'
    digest = hashlib.md5(text.replace("#" * 32, "k-1", 1).encode()).hexdigest()
    garbled = text.replace("#" * 32, digest, 1).encode()
    assert verify_hook_auth(garbled, "k-1")
    assert not verify_hook_auth(garbled, "k-2")


# --- layouts -----------------------------------------------------------------------------------------------------


def test_captured_classic_body() -> None:
    delivery = read_delivery(fixture("classic_captured.json"))
    assert (delivery.layout, delivery.retry_count) == ("batched", None)
    (event,) = delivery.events
    assert summary(event) == ("email_status", "recipient@example.org", (), "ok_delivered", None, True)
    assert event.time == at("2017-06-19 10:38:22")
    assert event.raw["event_data"]["email_id"] == 11411542313
    assert not event.unsubscribes


def test_classic_batch_with_every_event_kind() -> None:
    delivery = read_delivery(fixture("classic_batch.json"))
    assert delivery.layout == "batched"
    assert [summary(e) for e in delivery.events] == [
        ("unsubscribe", "ann@example.com", (101,), None, None, True),
        ("unsubscribe", "bob@example.com", (202,), None, None, True),  # "202": a number as a string
        ("subscribe", "carol@example.com", (101,), None, None, True),
        ("email_status", "dave@example.org", (), "ok_unsubscribed", 5501, True),
        ("email_status", "erin@example.org", (), "err_unsubscribed", 5501, True),
        ("email_status", "frank@example.org", (), "ok_link_visited", 5501, True),
        ("campaign_status", None, (), "completed", 5501, True),
        ("balance_changed", None, (), None, None, False),
        ("unsubscribe", "jack@example.com", (101, 303), None, None, True),  # list_ids, no event_time
        ("unsubscribe", "эмма@пример.рф", (101,), None, None, True),  # \uXXXX-escaped in the body
    ]
    assert [e.unsubscribes for e in delivery.events] == [
        True, True, False, True, True, False, False, False, True, True
    ]  # fmt: skip
    assert delivery.events[0].time == at("2026-11-23 10:00:00")
    assert delivery.events[8].time is None
    assert delivery.events[7].problem == "unknown event name"
    assert delivery.events[5].raw["event_data"]["url"] == "https://example.com/offer"


def test_flat_single_event_body() -> None:
    delivery = read_delivery(fixture("flat_unsubscribe.json"))
    assert delivery.layout == "flat"
    (event,) = delivery.events
    assert summary(event) == ("unsubscribe", "gina@example.com", (101,), None, None, True)
    assert event.time == at("2026-11-23 10:05:00")
    assert "auth" not in event.raw
    assert event.raw["login"] == "acme-login"


def test_go_layout_with_event_time_inside_event_data() -> None:
    delivery = read_delivery(fixture("go_layout.json"))
    assert delivery.layout == "batched"
    assert [summary(e) for e in delivery.events] == [
        ("email_status", "hank@example.net", (), "ok_unsubscribed", 5502, True),
        ("unsubscribe", "ivy@example.net", (101,), None, None, True),
        ("transactional_email_status", "hank@example.net", (), "delivered", None, False),
        ("transactional_spam_block", None, (), None, None, False),
    ]
    assert [e.time for e in delivery.events[:3]] == [
        at("2026-11-23 10:06:00"),
        at("2026-11-23 10:06:01"),
        at("2026-11-23 10:06:02"),
    ]
    assert delivery.events[0].raw["event_data"]["delivery_info"]["user_agent"].startswith("Mozilla/5.0")


def test_redelivery_is_the_same_events_with_a_retry_count() -> None:
    first = read_delivery(fixture("classic_unsubscribe.json"))
    again = read_delivery(fixture("classic_unsubscribe_retry.json"))
    assert (first.retry_count, again.retry_count) == (None, 1)
    assert [e.identity() for e in first.events] == [e.identity() for e in again.events]
    assert first.identity == again.identity


def test_unknown_events_and_layouts_are_kept_not_refused() -> None:
    only_unknown = read_delivery(fixture("classic_unknown_events_only.json"))
    assert [(e.name, e.recognised) for e in only_unknown.events] == [
        ("balance_changed", False),
        ("sender_verified", False),
    ]
    unknown = read_delivery(fixture("unknown_layout.json"))
    assert (unknown.layout, unknown.events) == ("unknown", ())
    assert unknown.problem


def test_event_identity_follows_the_dedupe_fields() -> None:
    base = {
        "event_name": "unsubscribe",
        "event_time": "2026-11-23 10:00:00",
        "event_data": {"email": "a@b.c"},
    }
    same = parse_event({**base, "event_data": {"email": " A@B.C ", "source": "link"}})
    assert parse_event(base).identity() == same.identity()  # extra keys, case: the same event
    other_time = parse_event({**base, "event_time": "2026-11-23 10:00:01"})
    other_list = parse_event({**base, "event_data": {"email": "a@b.c", "list_id": 7}})
    ids = {parse_event(base).identity(), other_time.identity(), other_list.identity()}
    assert len(ids) == 3


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"event_time": "2026-11-23 10:00:00"}, "no event_name"),
        ({"event_name": 5}, "no event_name"),
        ({"event_name": "unsubscribe", "event_data": []}, "event_data is not an object"),
        ({"event_name": "unsubscribe", "event_data": {"email": "not-an-address"}}, "no valid email"),
        ({"event_name": "email_status", "event_data": {"email": "a@b.c"}}, "no status"),
        ({"event_name": "campaign_status", "event_data": {"campaign_id": 1}}, "no status"),
        ({"event_name": "bounce", "event_data": {"email": "a@b.c"}}, "unknown event name"),
        ("just a string", "no event_name"),
    ],
)
def test_unreadable_events_are_unrecognised_with_a_reason(item: object, problem: str) -> None:
    event = parse_event(item)
    assert (event.recognised, event.problem, event.unsubscribes) == (False, problem, False)


def test_harmless_variations_are_tolerated() -> None:
    body = sign(
        {
            "events_by_user": {"0": {"login": "x", "extra": 1, "events": {"5": {
                "event_name": "email_status",
                "event_time": 1764410400,
                "event_data": {"email": "a@b.c", "status": "ok_unsubscribed", "campaign_id": 7.0,
                               "list_ids": "3,x,4", "new_key": [1]},
            }}}},
            "retry_count": "2",
        },
        "k",
    )  # fmt: skip
    delivery = read_delivery(body)
    (event,) = delivery.events
    assert summary(event) == ("email_status", "a@b.c", (3, 4), "ok_unsubscribed", 7, True)
    assert event.time == datetime(2025, 11, 29, 10, 0, tzinfo=UTC)
    assert delivery.retry_count == 2
    odd_time = parse_event(
        {"event_name": "unsubscribe", "event_time": "soon", "event_data": {"email": "a@b.c"}}
    )
    assert (odd_time.recognised, odd_time.time) == (True, None)


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"[]",
        b'"text"',
        b'{"auth": "x"}',
        b'{"events_by_user": 5}',
        b'{"events_by_user": [1, {"events": 2}]}',
    ],
)
def test_json_in_no_known_shape_never_raises(body: bytes) -> None:
    delivery = read_delivery(body)
    assert all(not e.recognised for e in delivery.events)


@pytest.mark.parametrize("body", [b"", b"\xff\xfe\x00", b"{", b"[" * 100_000])
def test_only_bodies_that_are_not_json_raise(body: bytes) -> None:
    with pytest.raises(UnisenderHookParseError):
        read_delivery(body)


def test_caps_on_body_size_and_event_count() -> None:
    with pytest.raises(UnisenderHookParseError, match="exceeds"):
        read_delivery(b" " * (MAX_HOOK_BODY_BYTES + 1))
    event = {"event_name": "x"}
    too_many = json.dumps({"events_by_user": [{"events": [event] * (MAX_HOOK_EVENTS + 1)}]}).encode()
    delivery = read_delivery(too_many)
    assert (delivery.layout, delivery.events) == ("unknown", ())
    assert "more than" in (delivery.problem or "")
    at_cap = json.dumps({"events_by_user": [{"events": [event] * MAX_HOOK_EVENTS}]}).encode()
    assert len(read_delivery(at_cap).events) == MAX_HOOK_EVENTS


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
        "event_name": st.sampled_from(["unsubscribe", "email_status", "campaign_status", "other"])
        | json_values,
        "event_time": st.sampled_from(["2026-11-23 10:00:00", "0001-01-01T00:00:00+01:00", "9999-12-31"])
        | st.integers()
        | json_values,
        "event_data": st.fixed_dictionaries(
            {},
            optional={
                "email": st.emails() | json_values,
                "list_id": st.integers() | st.text(max_size=20) | json_values,
                "list_ids": st.lists(st.integers()) | st.text(max_size=20) | json_values,
                "status": st.sampled_from(["ok_unsubscribed", "ok_read"]) | json_values,
                "campaign_id": st.integers() | st.floats() | json_values,
                "event_time": json_values,
            },
        )
        | json_values,
    },
)
body_like = (
    st.fixed_dictionaries(
        {},
        optional={
            "auth": st.text(max_size=40),
            "retry_count": json_values,
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
    | event_like
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512) | body_like.map(lambda b: json.dumps(b).encode()))
def test_read_delivery_never_raises_anything_but_parse_error(body: bytes) -> None:
    try:
        delivery = read_delivery(body)
    except UnisenderHookParseError:
        return
    for event in delivery.events:
        event.identity()
        json.dumps(event.raw, ensure_ascii=True)
        assert event.email is None or event.email == event.email.lower()
        assert event.time is None or event.time.tzinfo is UTC
        assert all(i > 0 for i in event.list_ids)
        if event.unsubscribes:
            assert event.email is not None


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
