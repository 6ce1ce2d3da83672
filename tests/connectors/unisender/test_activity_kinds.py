"""Unisender's delivery statuses read as activity kinds (``app.connectors.unisender.activity``), through the
hook reader as the sync engine sees them."""

from __future__ import annotations

import json

import pytest

from app.connectors.base import ActivityKind
from app.connectors.unisender.hooks import read_delivery


def _event(name: str, data: dict[str, object]) -> bytes:
    body = {
        "auth": "0" * 32,
        "events_by_user": [
            {
                "login": "acme",
                "events": [{"event_name": name, "event_time": "2026-11-30 10:00:00", "event_data": data}],
            }
        ],
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("ok_delivered", ActivityKind.DELIVERED),
        ("ok_read", ActivityKind.OPENED),
        ("OK_READ", ActivityKind.OPENED),
        ("ok_link_visited", ActivityKind.CLICKED),
        ("ok_unsubscribed", ActivityKind.UNSUBSCRIBED),
        ("ok_fbl", ActivityKind.COMPLAINED),
        ("err_spam_rejected", ActivityKind.COMPLAINED),
        ("err_user_unknown", ActivityKind.HARD_BOUNCE),
        ("err_domain_inactive", ActivityKind.HARD_BOUNCE),
        ("err_mailbox_full", ActivityKind.SOFT_BOUNCE),
        ("err_will_retry", ActivityKind.SOFT_BOUNCE),
        ("ok_sent", None),
        ("not_sent", None),
        ("err_unsubscribed", None),  # not sent: unsubscribed before, no new activity
        ("something_new", None),
    ],
)
def test_email_status_kinds(status: str, kind: ActivityKind | None) -> None:
    [event] = read_delivery(
        _event("email_status", {"email": "A@x.io", "status": status, "campaign_id": 7})
    ).events
    assert event.activity == kind
    assert (event.email, event.campaign_id) == ("a@x.io", 7)


def test_unsubscribe_events_are_activity_and_others_are_not() -> None:
    [unsub] = read_delivery(_event("unsubscribe", {"email": "a@x.io", "list_id": 3})).events
    assert (unsub.activity, unsub.unsubscribed_lists) == (ActivityKind.UNSUBSCRIBED, (3,))
    [sub] = read_delivery(_event("subscribe", {"email": "a@x.io", "list_id": 3})).events
    assert sub.activity is None
    [bad] = read_delivery(_event("email_status", {"email": "not an address", "status": "ok_read"})).events
    assert bad.activity is None  # unrecognised: no address
