"""The pure mapping from CRM contacts to what the email platform should hold."""

from __future__ import annotations

import pytest

from app.sync.mapping import DesiredAddress, contact_emails, normalize_email, payload_hash


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


def test_payload_of_a_deletion_carries_no_name() -> None:
    assert DesiredAddress("a@x.io", delete=False, name="Ann").payload() == {"delete": False, "name": "Ann"}
    assert DesiredAddress("a@x.io", delete=True, name="Ann").payload() == {"delete": True, "name": ""}


def test_payload_hash_covers_the_payload_and_the_target_list() -> None:
    added = {"delete": False, "name": "Ann"}
    h = payload_hash(added, 7)
    assert h == payload_hash({"name": "Ann", "delete": False}, 7)  # key order does not matter
    assert len(h) == 64
    assert int(h, 16) >= 0
    assert h != payload_hash(added, 8)
    assert h != payload_hash(added, None)
    assert h != payload_hash({"delete": False, "name": "Anne"}, 7)
