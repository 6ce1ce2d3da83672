"""POST /unisender/contacts: an operator's push goes through the outbox like the engine's own changes."""

from __future__ import annotations

import json

import httpx

from tests.conftest import raw_sql

# What a push queues for an address no contact holds: the default spec's empty Name (no list yet).
UNOWNED = {
    "delete": False,
    "fields": {"Name": ""},
    "phone": "",
    "lists": [],
    "excluded": [],
    "unsubscribed": [],
}


async def _register(api: httpx.AsyncClient, headers: dict[str, str], account_id: int) -> None:
    body = {
        "account_id": account_id,
        "subdomain": "acme",
        "client_id": "client-1",
        "client_secret": "secret-0123456789abcdef",
        "redirect_uri": "https://contactsync.example/auth/callback",
    }
    r = await api.post("/integration", json=body, headers=headers)
    assert r.status_code == 201, r.text


async def test_a_push_makes_a_backing_off_row_due_now(
    api: httpx.AsyncClient, admin_headers: dict[str, str], clean_db: str
) -> None:
    """A row waiting out a retry backoff is due at once when an operator pushes its address again: a fresh
    desire forgets the old one's attempts and delay, as the engine's recompute does (the router's own upsert
    left ``next_attempt_at`` an hour ahead, so the flush it enqueued found nothing due)."""
    await _register(api, admin_headers, 5)
    await raw_sql(
        clean_db,
        "INSERT INTO outbox (account_id, email, payload, payload_hash, status, attempts, next_attempt_at,"
        " last_error, created_at, updated_at) VALUES (5, 'a@x.io', '{}', 'h', 'pending', 7,"
        " now() + interval '1 hour', 'TransientError: timeout', now(), now())",
    )
    r = await api.post(
        "/unisender/contacts", json={"id": 5, "emails": ["A@x.io ", "b@x.io"]}, headers=admin_headers
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"account_id": 5, "queued": ["a@x.io", "b@x.io"], "skipped_unsubscribed": []}
    rows = await raw_sql(
        clean_db,
        "SELECT email, status, attempts, last_error, next_attempt_at <= now() AS due, payload::text AS payload"
        " FROM outbox ORDER BY email",
    )
    assert [{**row, "payload": json.loads(row["payload"])} for row in rows] == [
        {
            "email": "a@x.io",
            "status": "pending",
            "attempts": 0,
            "last_error": None,
            "due": True,
            # No contact holds it: the default spec's empty Name (the test account has no list yet).
            "payload": UNOWNED,
        },
        {
            "email": "b@x.io",
            "status": "pending",
            "attempts": 0,
            "last_error": None,
            "due": True,
            # No contact holds it: the default spec's empty Name (the test account has no list yet).
            "payload": UNOWNED,
        },
    ]


async def test_a_push_skips_unsubscribed_addresses_and_refuses_unknown_accounts(
    api: httpx.AsyncClient, admin_headers: dict[str, str], clean_db: str
) -> None:
    r = await api.post("/unisender/contacts", json={"id": 6, "emails": ["a@x.io"]}, headers=admin_headers)
    assert r.status_code == 404
    assert r.json() == {"error": "unknown_account", "detail": "Account 6 is not registered."}
    await _register(api, admin_headers, 6)
    await raw_sql(
        clean_db,
        "INSERT INTO contact_email (account_id, email, consent, updated_at)"
        " VALUES (6, 'gone@x.io', 'unsubscribed', now())",
    )
    r = await api.post(
        "/unisender/contacts", json={"id": 6, "emails": ["gone@x.io", "c@x.io"]}, headers=admin_headers
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"account_id": 6, "queued": ["c@x.io"], "skipped_unsubscribed": ["gone@x.io"]}
    rows = await raw_sql(clean_db, "SELECT email FROM outbox")
    assert [row["email"] for row in rows] == ["c@x.io"]
