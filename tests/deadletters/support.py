"""Dead letters seeded straight into the tables (one of each dead state, plus rows that are not dead), for the
API and CLI tests that need no worker or sandbox."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import raw_sql

ACCOUNT = 31_000_001
OTHER = 31_000_002


async def register(api: httpx.AsyncClient, headers: dict[str, str], account_id: int) -> None:
    """The account's integration, as the operator registers it (no Kommo needed)."""
    r = await api.post(
        "/integration",
        headers=headers,
        json={
            "account_id": account_id,
            "subdomain": f"dl{account_id}",
            "client_id": "client-" + secrets.token_hex(4),
            "client_secret": "secret-" + secrets.token_hex(16),
            "redirect_uri": "https://contactsync.example/auth/callback",
        },
    )
    assert r.status_code == 201, r.text


@dataclass
class Seeded:
    """Ids of the seeded rows, by name."""

    event_failed: int
    event_unrecognised: int
    outbox_rejected: int
    outbox_dead: int
    crm_write_failed: int
    signup_failed: int
    outbox_discarded: int
    outbox_done: int
    other_event: int  # another account's failed event
    outbox_unsubscribed: int  # rejected, its address unsubscribed since

    def listed(self) -> list[str]:
        """The ids GET lists, newest first."""
        return [
            f"signup:{self.signup_failed}",
            f"crm_write:{self.crm_write_failed}",
            f"outbox:{self.outbox_unsubscribed}",
            f"outbox:{self.outbox_dead}",
            f"outbox:{self.outbox_rejected}",
            f"event:{self.event_unrecognised}",
            f"event:{self.event_failed}",
        ]


async def _one(url: str, sql: str, *args: object) -> int:
    rows = await raw_sql(url, sql + " RETURNING id", *args)
    return int(rows[0]["id"])


async def _event(url: str, account_id: int, status: str, error: str, at: datetime, *, handled: bool) -> int:
    return await _one(
        url,
        "INSERT INTO webhook_event (account_id, source, dedupe_key, body, status, attempts, last_error,"
        " received_at, handled_at) VALUES ($1, 'kommo', $2, $3, $4, $5, $6, $7, $8)",
        account_id,
        secrets.token_hex(16),
        f"account[id]={account_id}&contacts[update][0][id]=1",
        status,
        5 if handled else 0,
        error,
        at - timedelta(seconds=30) if handled else at,
        at if handled else None,
    )


async def _outbox(
    url: str, account_id: int, email: str, status: str, at: datetime, *, error: str | None, code: str | None
) -> int:
    payload = {"delete": False, "fields": {"Name": email.split("@")[0]}, "lists": [1]}
    return await _one(
        url,
        "INSERT INTO outbox (account_id, email, payload, payload_hash, status, bulk, attempts,"
        " next_attempt_at, last_error, reject_code, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, false, $6, $7, $8, $9, $7, $7)",
        account_id,
        email,
        json.dumps(payload),
        secrets.token_hex(32),
        status,
        15 if status == "dead" else 0,
        at,
        error,
        code,
    )


async def seed(url: str, account_id: int = ACCOUNT, other: int = OTHER) -> Seeded:
    """One dead letter of each dead state a minute apart (the oldest 10 minutes ago), and rows that are not
    dead letters. ``other`` must be registered too (its event is another account's)."""
    now = datetime.now(UTC)
    t = [now - timedelta(minutes=10 - i) for i in range(10)]
    event_failed = await _event(
        url, account_id, "failed", "gave up after 5 attempts: CheckViolation", t[0], handled=True
    )
    event_unrecognised = await _event(
        url, account_id, "unrecognised", "unknown event 'lead_add'", t[1], handled=False
    )
    rejected = await _outbox(
        url,
        account_id,
        "info@example.com",
        "rejected",
        t[2],
        error='Role address "info@example.com" is not imported',
        code="role_address",
    )
    dead = await _outbox(
        url, account_id, "slow@example.com", "dead", t[3], error="ServerError: HTTP 503", code=None
    )
    unsubscribed = await _outbox(
        url, account_id, "gone@example.com", "rejected", t[4], error="Refused", code="invalid_email"
    )
    await raw_sql(
        url,
        "INSERT INTO contact_email (account_id, email, consent, updated_at) VALUES ($1, $2, 'unsubscribed', $3)",
        account_id,
        "gone@example.com",
        now,
    )
    crm = await _one(
        url,
        "INSERT INTO crm_write (account_id, kommo_id, email, source, field_type, target, value, unisender_at,"
        " state, last_error, created_at, handled_at)"
        " VALUES ($1, 77, 'ann@example.com', 'custom_field:5', 'select', 'City', 'Atlantis', $2, 'failed',"
        " 'the CRM has no option Atlantis', $2, $3)",
        account_id,
        t[4],
        t[5],
    )
    signup = await _one(
        url,
        "INSERT INTO signup (account_id, email, list_id, list_ids, state, created_at, handled_at, last_error)"
        " VALUES ($1, 'new@example.com', 1, '[1]', 'failed', $2, $3, 'NotFoundError: 404')",
        account_id,
        t[5],
        t[6],
    )
    discarded = await _outbox(
        url, account_id, "old@example.com", "discarded", t[8], error="Refused", code="invalid_email"
    )
    done = await _outbox(url, account_id, "ok@example.com", "done", t[9], error=None, code=None)
    other_event = await _event(url, other, "failed", "gave up", t[9], handled=True)
    return Seeded(
        event_failed,
        event_unrecognised,
        rejected,
        dead,
        crm,
        signup,
        discarded,
        done,
        other_event,
        unsubscribed,
    )


async def states(url: str) -> dict[str, str]:
    """Every seeded row's state, by dead-letter id."""
    rows = await raw_sql(
        url,
        "SELECT 'event:' || id AS id, status AS s FROM webhook_event UNION ALL"
        " SELECT 'outbox:' || id, status FROM outbox UNION ALL"
        " SELECT 'crm_write:' || id, state FROM crm_write UNION ALL"
        " SELECT 'signup:' || id, state FROM signup",
    )
    return {str(r["id"]): str(r["s"]) for r in rows}
