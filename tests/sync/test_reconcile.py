"""The reconcile pass: contacts Kommo says changed since the last pass are read again and applied, so a change
whose webhook never reached us is still mirrored; while a full sync of the account runs, the pass leaves Kommo's
budget to it and its cursor where it was."""

from __future__ import annotations

import time

from app.context import build_context
from app.sync.events import process_kommo_events
from app.sync.reconcile import FIRST_PASS_SECONDS, reconcile_account
from tests.conftest import Stack, raw_sql
from tests.support.e2e import connect_account, create_contact


async def _contact_reads(stack: Stack) -> int:
    calls: dict[str, int] = (await stack.kommo.get("/_sandbox/stats")).json()["calls"]
    return calls.get("GET /api/v4/contacts", 0)


async def _cursor(url: str, account_id: int) -> int | None:
    [row] = await raw_sql(url, "SELECT reconcile_cursor FROM integration WHERE account_id = $1", account_id)
    cursor: int | None = row["reconcile_cursor"]
    return cursor


async def test_a_change_whose_webhook_was_lost_is_applied_and_the_cursor_moves(stack: Stack) -> None:
    account = await connect_account(stack)
    url = stack.settings.database_url
    assert url
    pc = await build_context(stack.settings)  # no worker: the passes below are the only readers
    try:
        ann = await create_contact(stack, account, "Ann", "ann@example.com")
        r = await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 10})
        assert r.status_code == 200, r.text
        await process_kommo_events(pc, account.account_id)
        base = f"/_sandbox/accounts/{account.subdomain}/contacts"
        r = await stack.kommo.patch(base, json=[{"id": ann, "name": "Ann Renamed"}])
        assert r.status_code == 200, r.text
        r = await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 10})
        assert r.status_code == 200, r.text
        # The rename's webhook is lost: its stored event goes before any job sees it.
        await raw_sql(url, "DELETE FROM webhook_event WHERE account_id = $1", account.account_id)

        assert await reconcile_account(pc, account.account_id) == 1
        [row] = await raw_sql(url, "SELECT name FROM contact WHERE kommo_id = $1", ann)
        assert row["name"] == "Ann Renamed"
        [queued] = await raw_sql(
            url,
            "SELECT count(*) AS n FROM outbox WHERE account_id = $1 AND email = 'ann@example.com'",
            account.account_id,
        )
        assert queued["n"] >= 1
        kommo_stamp = (await stack.kommo.get(f"{base}/{ann}")).json()["updated_at"]
        cursor = await _cursor(url, account.account_id)
        assert cursor is not None
        # The newest stamp read, or now if that is ahead of our clock (the sandbox stamps edits apart).
        assert kommo_stamp - 5 <= cursor <= kommo_stamp
        assert await reconcile_account(pc, account.account_id) == 0  # nothing changed since
    finally:
        await pc.close()


async def test_no_pass_reads_kommo_while_a_full_sync_of_the_account_runs(stack: Stack) -> None:
    account = await connect_account(stack, contacts=30)
    url = stack.settings.database_url
    assert url
    pc = await build_context(stack.settings)  # no worker: the full sync stays pending, as if running
    try:
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        before = await _contact_reads(stack)

        started = int(time.time())
        assert await reconcile_account(pc, account.account_id) == 0
        assert await _contact_reads(stack) == before
        # The first pass's starting point is kept, so a sync longer than its reach back loses nothing.
        cursor = await _cursor(url, account.account_id)
        assert cursor is not None
        assert started - FIRST_PASS_SECONDS <= cursor <= int(time.time()) - FIRST_PASS_SECONDS
        assert await reconcile_account(pc, account.account_id) == 0
        assert await _cursor(url, account.account_id) == cursor  # kept, not moved by later skipped passes

        await raw_sql(url, "UPDATE sync_run SET status = 'done' WHERE account_id = $1", account.account_id)
        await reconcile_account(pc, account.account_id)
        assert await _contact_reads(stack) > before
        assert await _cursor(url, account.account_id) is not None
    finally:
        await pc.close()
