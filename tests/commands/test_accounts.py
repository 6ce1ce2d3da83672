"""``contactsync accounts`` over the real database: the views of ``GET /accounts`` as a table, with the lag."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

from app.config import Settings
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import Outbox, WebhookEvent
from app.db.states import EventSource, EventStatus, IntegrationStatus, OutboxStatus
from app.servers import free_port
from tests.commands.conftest import Cli, add_connected, integration


def _outbox(account_id: int, email: str, status: OutboxStatus, *, waited: float = 0.0) -> Outbox:
    at = utcnow() - timedelta(seconds=waited)
    return Outbox(
        account_id=account_id,
        email=email,
        payload={},
        payload_hash="h",
        status=status,
        updated_at=at,
        created_at=at,
        reject_code="invalid_email" if status == OutboxStatus.REJECTED else None,
    )


async def _seed(ctx: ProcessContext) -> None:
    async with ctx.db.session_scope() as session:
        row = await add_connected(session, 101, token_expires_at=utcnow() + timedelta(hours=3))
        row.last_error = "KommoUnavailable: Kommo answered 503\nafter 3 tries"
        session.add(integration(202, status=IntegrationStatus.PENDING))
    async with ctx.db.session_scope() as session:
        session.add_all(
            [
                _outbox(101, "a@example.com", OutboxStatus.PENDING, waited=125),
                _outbox(101, "b@example.com", OutboxStatus.PENDING, waited=5),
                _outbox(101, "c@example.com", OutboxStatus.REJECTED),
                _outbox(101, "d@example.com", OutboxStatus.DONE, waited=900),
                WebhookEvent(
                    account_id=101,
                    source=EventSource.KOMMO,
                    dedupe_key="k1",
                    body="{}",
                    status=EventStatus.PENDING,
                    received_at=utcnow() - timedelta(seconds=30),
                ),
            ]
        )


async def test_accounts_lists_every_account_with_queues_and_lag(
    ctx: ProcessContext, settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    await _seed(ctx)
    r = await cli(settings)("accounts")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == [
        "ID", "HOST", "STATUS", "UNISENDER", "TOKEN", "EXPIRES", "PENDING", "EVENTS", "REJECTED", "LAG", "LAST", "ERROR"
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"101", "202"}
    connected = rows["101"].split()
    assert connected[1:4] == ["acme101.kommo.com", "connected", "yes"]
    # Token expiry as a date and time, then the outbox pending (2), events (1), rejected (1), and the lag: the
    # oldest pending row waited 125 s (the done row's 900 s is no wait).
    assert connected[6:10] == ["2", "1", "1", "2m05s"] or connected[6:10] == ["2", "1", "1", "2m06s"]
    assert rows["101"].endswith("KommoUnavailable: Kommo answered 503 after 3 tries")
    assert rows["202"].split()[1:8] == ["acme202", "(no", "host", "yet)", "pending", "no", "-"]
    assert rows["202"].split()[-2:] == ["-", "-"]  # no lag, no error
    assert "s3cret" not in r.out + r.err
    assert "unisender-api-key-value" not in r.out + r.err


async def test_accounts_json_carries_the_views_and_lag_in_seconds(
    ctx: ProcessContext, settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    await _seed(ctx)
    r = await cli(settings)("accounts", "--json")
    assert r.code == 0, r.err
    views = {v["account_id"]: v for v in json.loads(r.out)}
    assert set(views) == {101, 202}
    assert views[101]["outbox"] == {"pending": 2, "rejected": 1, "dead": 0}
    assert views[101]["events_pending"] == 1
    assert views[101]["unisender"]["connected"] is True
    assert 124 <= views[101]["lag_s"] < 140
    assert views[202]["lag_s"] is None
    assert views[202]["status"] == "pending"


async def test_accounts_without_a_database_url_says_which_variable(
    settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    # In development a missing URL is no configuration error (serve --embedded runs without one), so the
    # command itself has to say what it needs.
    r = await cli(settings, CONTACTSYNC_ENV="development", CONTACTSYNC_DATABASE_URL="")("accounts")
    assert r.code == 2
    assert "CONTACTSYNC_DATABASE_URL must be set" in r.err


async def test_accounts_on_an_unreachable_database_fails_in_one_line(
    settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    dead = f"postgresql+asyncpg://postgres:pw-not-to-show@127.0.0.1:{free_port()}/nothing"
    r = await cli(settings, CONTACTSYNC_DATABASE_URL=dead, CONTACTSYNC_DB_CONNECT_TIMEOUT="2")("accounts")
    assert r.code == 1
    assert r.err.startswith("contactsync: cannot read the database: ")
    assert "Traceback" not in r.err
    assert "pw-not-to-show" not in r.out + r.err
