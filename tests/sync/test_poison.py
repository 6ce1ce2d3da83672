"""One bad event or contact never stops the mirror of its account, and a run never stays "running" without
a live job (item 1 of the hardening issue).

Everything runs for real: the Kommo sandbox holds the contacts and delivers the webhooks, the service
stores them, a worker applies them to PostgreSQL. A "poisonous" value that our cleaning does not cover is
made with a CHECK constraint the test adds to the ``contact`` table: PostgreSQL itself refuses the row, as it
would refuse a value out of range, and nothing of our code is replaced.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app.context import build_context
from app.sync import events, fullsync
from tests.conftest import Stack, raw_sql, running_worker
from tests.faults.support import post_webhook
from tests.support.e2e import Account, connect_account, unisender_contacts, wait_for, wait_quiet

POISON = "Poison Pill"


def _url(stack: Stack) -> str:
    assert stack.settings.database_url
    return stack.settings.database_url


@asynccontextmanager
async def _poison_constraint(stack: Stack) -> AsyncIterator[None]:
    """PostgreSQL refuses any contact row named ``POISON`` (the test database is shared: dropped after)."""
    await raw_sql(
        _url(stack), f"ALTER TABLE contact ADD CONSTRAINT test_poison CHECK (name NOT LIKE '%{POISON}%')"
    )
    try:
        yield
    finally:
        await raw_sql(_url(stack), "ALTER TABLE contact DROP CONSTRAINT IF EXISTS test_poison")


async def _kommo(stack: Stack, account: Account, method: str, body: Any, *, webhooks: bool = True) -> Any:
    r = await stack.kommo.request(
        method,
        f"/_sandbox/accounts/{account.subdomain}/contacts",
        params={} if webhooks else {"webhooks": "0"},
        json=body,
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


def _emails(*emails: str) -> list[dict[str, object]]:
    return [{"field_code": "EMAIL", "values": [{"value": e, "enum_code": "WORK"} for e in emails]}]


async def _create(stack: Stack, account: Account, name: str, email: str, *, webhooks: bool = True) -> int:
    created = await _kommo(
        stack, account, "POST", [{"name": name, "custom_fields_values": _emails(email)}], webhooks=webhooks
    )
    return int(created["_embedded"]["contacts"][0]["id"])


async def _rename(stack: Stack, account: Account, cid: int, name: str) -> None:
    await _kommo(stack, account, "PATCH", [{"id": cid, "name": name}])


async def _stored_name(stack: Stack, cid: int) -> str | None:
    rows = await raw_sql(_url(stack), "SELECT name FROM contact WHERE kommo_id = $1", cid)
    return str(rows[0]["name"]) if rows else None


async def _full_sync(stack: Stack, account: Account) -> str:
    r = await stack.api.post("/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


async def _run(stack: Stack, run_id: str) -> dict[str, Any]:
    r = await stack.api.get(f"/sync/runs/{run_id}", headers=stack.admin_headers)
    assert r.status_code == 200, r.text
    run: dict[str, Any] = r.json()
    return run


# --- events ---------------------------------------------------------------------------------------------------


async def test_nul_in_a_webhook_name_is_cleaned_and_later_events_apply(stack: Stack) -> None:
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        ann = await _create(stack, account, "Ann", "ann@example.com")
        bob = await _create(stack, account, "Bob", "bob@example.com")
        await wait_quiet(stack, account, within=20)
        # Kommo delivers the name as contacts[update][0][name]=Ann%00Nul%07Bell.
        await _rename(stack, account, ann, "Ann\x00Nul\x07Bell")
        await _rename(stack, account, bob, "Bob Later")
        await wait_quiet(stack, account, within=20)
        assert await _stored_name(stack, ann) == "AnnNulBell"
        assert await _stored_name(stack, bob) == "Bob Later"
        rows = await raw_sql(_url(stack), "SELECT status, count(*) AS n FROM webhook_event GROUP BY status")
        assert {r["status"]: r["n"] for r in rows} == {"done": 4}
        held = await unisender_contacts(stack, account)
        assert held["ann@example.com"]["fields"]["Name"] == "AnnNulBell"
        assert held["bob@example.com"]["fields"]["Name"] == "Bob Later"


async def test_an_event_that_cannot_be_applied_fails_after_n_attempts_and_the_rest_goes_on(
    stack: Stack,
) -> None:
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        ann = await _create(stack, account, "Ann", "ann@example.com")
        bob = await _create(stack, account, "Bob", "bob@example.com")
        await wait_quiet(stack, account, within=20)
        async with _poison_constraint(stack):
            await _rename(stack, account, ann, f"Ann {POISON}")
            # Each later change wakes a job, which applies it and tries the bad event alone once more: the
            # attempts are counted outside the transaction the failure rolls back.
            for i in range(events.MAX_EVENT_ATTEMPTS + 3):
                await _rename(stack, account, bob, f"Bob {i}")

                async def applied(i: int = i) -> bool:
                    return await _stored_name(stack, bob) == f"Bob {i}"

                await wait_for(applied, within=10)
                rows = await raw_sql(
                    _url(stack), "SELECT status FROM webhook_event WHERE body LIKE '%Poison%'"
                )
                if rows[0]["status"] == "failed":
                    break
            [bad] = await raw_sql(
                _url(stack),
                "SELECT status, attempts, last_error FROM webhook_event WHERE body LIKE '%Poison%'",
            )
        assert bad["status"] == "failed", dict(bad)
        # Two jobs of the account may each try the suspect alone (its attempts are counted before the account's
        # lock is taken, by design, so that an attempt that kills its worker counts too): then the second
        # finds one attempt too many and gives up, an attempt later than a lone job would.
        assert events.MAX_EVENT_ATTEMPTS <= bad["attempts"] <= events.MAX_EVENT_ATTEMPTS + 1
        assert "test_poison" in bad["last_error"]
        assert "CheckViolation" in bad["last_error"]
        assert "Ann" not in bad["last_error"]  # the reason names the refusal, not the data
        assert await _stored_name(stack, ann) == "Ann"  # the bad version was not applied
        await wait_quiet(stack, account, within=20)  # nothing else is left pending
        view = (await stack.api.get(f"/accounts/{account.account_id}", headers=stack.admin_headers)).json()
        assert view["events_failed"] == 1
        assert view["events_pending"] == 0
        [failure] = view["recent_event_failures"]
        assert failure["attempts"] == bad["attempts"]
        assert "test_poison" in failure["reason"]


async def test_isolation_applies_the_good_events_of_a_failed_batch_in_one_job(stack: Stack) -> None:
    """20 events in one batch, one of them poisonous: one drain applies the 19 others (halves of the batch, each
    in its own transaction) and counts one attempt for the bad one only; each later drain counts one more,
    until it is failed."""
    account = await connect_account(stack)
    url = _url(stack)
    bodies = [
        f"account[id]={account.account_id}&contacts[update][0][id]={100 + i}"
        f"&contacts[update][0][name]={POISON if i == 13 else f'Name {i}'}"
        f"&contacts[update][0][updated_at]={int(time.time()) - 60}"
        for i in range(20)
    ]
    for body in bodies:
        r = await post_webhook(stack.api, account, body)
        assert r.status_code == 200, r.text
    pc = await build_context(stack.settings)
    try:
        async with _poison_constraint(stack):
            result = await events.process_kommo_events(pc, account.account_id)
            assert (result.events, result.failed) == (19, 0)
            rows = await raw_sql(url, "SELECT status, attempts, last_error FROM webhook_event ORDER BY id")
            assert [r["status"] for r in rows] == ["done"] * 13 + ["pending"] + ["done"] * 6
            assert rows[13]["attempts"] == 1
            assert "test_poison" in rows[13]["last_error"]
            for attempt in range(2, events.MAX_EVENT_ATTEMPTS + 1):
                result = await events.process_kommo_events(pc, account.account_id)
                [bad] = await raw_sql(
                    url, "SELECT status, attempts FROM webhook_event WHERE status <> 'done'"
                )
                assert bad["attempts"] == attempt
            assert bad["status"] == "failed"
            assert result.failed == 1
    finally:
        await pc.close()
    stored = await raw_sql(url, "SELECT count(*) AS n FROM contact")
    assert stored[0]["n"] == 19


# --- full sync ------------------------------------------------------------------------------------------------


async def test_nul_in_a_rest_contact_does_not_stop_a_full_sync(stack: Stack) -> None:
    account = await connect_account(stack, contacts=30, seed=3)
    nul = await _create(stack, account, "Rest\x00Nul", "rest@example.com", webhooks=False)
    async with running_worker(stack.settings):
        run_id = await _full_sync(stack, account)
        await wait_quiet(stack, account, within=20)
        run = await _run(stack, run_id)
        assert run["status"] == "done", run
        assert run["counters"]["fetched"] == 31
        assert run["counters"]["failed"] == 0
        assert await _stored_name(stack, nul) == "RestNul"
        assert (await unisender_contacts(stack, account))["rest@example.com"]["fields"]["Name"] == "RestNul"


async def test_a_contact_that_cannot_be_applied_is_recorded_on_the_run_which_goes_on(stack: Stack) -> None:
    account = await connect_account(stack, contacts=30, seed=4)
    bad = await _create(stack, account, POISON, "pill@example.com", webhooks=False)
    async with running_worker(stack.settings), _poison_constraint(stack):
        run_id = await _full_sync(stack, account)
        await wait_quiet(stack, account, within=20)
        run = await _run(stack, run_id)
    assert run["status"] == "done", run
    assert run["counters"]["fetched"] == 31
    assert run["counters"]["failed"] == 1
    [failure] = run["failures"]
    assert failure["kommo_id"] == bad
    assert "test_poison" in failure["reason"]
    assert POISON not in failure["reason"]
    assert await _stored_name(stack, bad) is None
    stored = await raw_sql(_url(stack), "SELECT count(*) AS n FROM contact")
    assert stored[0]["n"] == 30  # every other contact of the page was applied
    assert "pill@example.com" not in await unisender_contacts(stack, account)


async def test_a_run_whose_slices_keep_failing_ends_failed_and_a_new_run_can_start(stack: Stack) -> None:
    """A fault outside any contact (here PostgreSQL refuses to move the run's cursor) fails every slice: the
    run is retried ``MAX_SLICE_FAILURES`` times, then ends ``failed`` with its error instead of staying
    "running" for ever; a new POST /sync/contacts starts a new run."""
    account = await connect_account(stack, contacts=10, seed=5)
    url = _url(stack)
    await raw_sql(
        url,
        "CREATE OR REPLACE FUNCTION test_frozen_cursor() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.cursor IS DISTINCT FROM OLD.cursor THEN RAISE EXCEPTION 'cursor frozen by the test'; END IF;"
        " RETURN NEW; END $$",
    )
    await raw_sql(
        url,
        "CREATE TRIGGER test_frozen_cursor BEFORE UPDATE ON sync_run FOR EACH ROW"
        " EXECUTE FUNCTION test_frozen_cursor()",
    )
    try:
        async with running_worker(stack.settings):
            run_id = await _full_sync(stack, account)
            started = time.monotonic()

            async def ended() -> bool:
                return (await _run(stack, run_id))["status"] in ("done", "failed")

            await wait_for(ended, within=30)
            run = await _run(stack, run_id)
            assert run["status"] == "failed", run
            assert run["error"].startswith(f"gave up after {fullsync.MAX_SLICE_FAILURES} failed attempts")
            assert "cursor frozen by the test" in run["error"]
            assert time.monotonic() - started < 25  # retries back off 2 s, 4 s: not minutes
    finally:
        await raw_sql(url, "DROP TRIGGER IF EXISTS test_frozen_cursor ON sync_run")
        await raw_sql(url, "DROP FUNCTION IF EXISTS test_frozen_cursor()")
    async with running_worker(stack.settings):
        again = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert again.status_code == 202, again.text
        assert again.json()["created"] is True
        assert again.json()["run_id"] != run_id
        await wait_quiet(stack, account, within=20)
        assert (await _run(stack, again.json()["run_id"]))["status"] == "done"
