"""A live-change flush job stops after a partial batch, but a backlog of full batches keeps it going."""

from __future__ import annotations

import json

import pytest

from app.context import build_context
from app.sync import outbox
from tests.conftest import Stack, raw_sql
from tests.support.e2e import connect_account


async def test_flush_reports_a_backlog_and_stops_after_a_partial_batch(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await connect_account(stack, subdomain="acme")
    url = stack.settings.database_url
    assert url
    for i in range(5):
        await raw_sql(
            url,
            "INSERT INTO outbox (account_id, email, payload, payload_hash, status, attempts, next_attempt_at,"
            " created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', 0, now(), now(), now())",
            account.account_id,
            f"p{i}@example.com",
            json.dumps({"name": f"P{i}"}),
            f"h{i}",
        )
    monkeypatch.setattr(outbox, "BATCH_ROWS", 2)
    monkeypatch.setattr(outbox, "MAX_BATCHES", 1)
    pc = await build_context(stack.settings)
    try:
        first = await outbox.flush_account(pc, account.account_id, drain=False)
        assert (first.calls, first.pushed, first.more) == (1, 2, True)  # stopped by MAX_BATCHES: more to do
        monkeypatch.setattr(outbox, "MAX_BATCHES", 10)
        second = await outbox.flush_account(pc, account.account_id, drain=False)
        assert (second.calls, second.pushed, second.more) == (2, 3, False)  # 2 + a partial 1: done
    finally:
        await pc.close()
    left = await raw_sql(url, "SELECT count(*) AS n FROM outbox WHERE status = 'pending'")
    assert left[0]["n"] == 0
