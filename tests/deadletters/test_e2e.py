"""Dead letters over the whole stack: rows fail for good through the real path (Unisender's sandbox refuses
them, or PostgreSQL refuses an event's contact), an operator lists them, fixes the cause, replays them, and
the effect lands at the provider; a replay again is a no-op, a row that fails again comes back with its new
reason, a discarded row leaves the list (and a later change of its contact still revives it), and each action
is recorded with who and when."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app.sync import events, push_policy
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, unisender_contacts, wait_for, wait_quiet

pytestmark = pytest.mark.slow


def _url(stack: Stack) -> str:
    assert stack.settings.database_url
    return stack.settings.database_url


async def _create(stack: Stack, account: Account, name: str, email: str) -> int:
    body = [{"name": name, "custom_fields_values": [{"field_code": "EMAIL", "values": [{"value": email}]}]}]
    r = await stack.kommo.post(f"/_sandbox/accounts/{account.subdomain}/contacts", json=body)
    assert r.status_code in (200, 201), r.text
    return int(r.json()["_embedded"]["contacts"][0]["id"])


async def _rename(stack: Stack, account: Account, contact_id: int, name: str) -> None:
    r = await stack.kommo.patch(
        f"/_sandbox/accounts/{account.subdomain}/contacts", json=[{"id": contact_id, "name": name}]
    )
    assert r.status_code == 200, r.text


async def _letters(stack: Stack, account: Account, **params: Any) -> dict[str, dict[str, Any]]:
    r = await stack.api.get(
        f"/accounts/{account.account_id}/dead-letters", headers=stack.admin_headers, params=params
    )
    assert r.status_code == 200, r.text
    return {item["id"]: item for item in r.json()["items"]}


async def _act(stack: Stack, account: Account, action: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await stack.api.post(
        f"/accounts/{account.account_id}/dead-letters/{action}", headers=stack.admin_headers, json=body
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def _outbox(stack: Stack, email: str) -> dict[str, Any]:
    rows = await raw_sql(
        _url(stack),
        "SELECT id, status, attempts, last_error, reject_code FROM outbox WHERE email = $1",
        email,
    )
    return dict(rows[0])


def _role_addresses(stack: Stack, refused: bool) -> None:
    """Whether Unisender's sandbox refuses role addresses (info@, sales@ …) row by row, as it does by default."""
    stack.unisender_app.state.unisender.config.reject_role_addresses = refused


async def test_rejected_rows_fixed_replayed_and_discarded(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        await _create(stack, account, "Info Desk", "info@acme.test")
        await _create(stack, account, "Sales Team", "sales@acme.test")
        await _create(stack, account, "Ann", "ann@acme.test")
        await wait_quiet(stack, account, within=30)

        # Unisender refused the two role addresses: two dead letters with its answer.
        letters = await _letters(stack, account)
        info, sales = await _outbox(stack, "info@acme.test"), await _outbox(stack, "sales@acme.test")
        info_id, sales_id = f"outbox:{info['id']}", f"outbox:{sales['id']}"
        assert sorted(letters) == sorted([info_id, sales_id])
        assert letters[info_id]["status"] == "rejected"
        assert letters[info_id]["code"] == "role_address"
        assert letters[info_id]["reason"] == "refused by the email platform"
        assert "info@acme.test" in letters[info_id]["error"]
        assert "ann@acme.test" in await unisender_contacts(stack, account)

        # Replayed while Unisender answers 503 to every import: it fails again, now for that reason (a row is
        # dead after one transient failure here), and is listed again with it.
        monkeypatch.setattr(push_policy, "MAX_ATTEMPTS", 1)
        fault = {"rate": 1.0, "kinds": ["http_503"], "method": "importContacts", "api_key": account.api_key}
        r = await stack.unisender.post("/_sandbox/faults", json=fault)
        assert r.status_code == 200, r.text
        first = await _act(stack, account, "replay", {"ids": [info_id]})
        assert (first["replayed"], first["skipped"]) == (1, 0)

        async def info_dead_again() -> bool:
            return (await _outbox(stack, "info@acme.test"))["status"] == "dead"

        await wait_for(info_dead_again, within=20, what="the replayed row to fail again")
        again = (await _letters(stack, account))[info_id]
        assert (again["status"], again["reason"], again["code"], again["attempts"]) == (
            "dead",
            "attempts exhausted",
            None,
            1,
        )
        assert "503" in again["error"], again
        assert again["at"] > letters[info_id]["at"]
        r = await stack.unisender.delete("/_sandbox/faults")
        assert r.status_code == 200, r.text

        # The cause fixed (Unisender takes role addresses now): replay every outbox dead letter; both land.
        _role_addresses(stack, refused=False)
        fixed = await _act(stack, account, "replay", {"all": True, "kind": "outbox"})
        assert (fixed["replayed"], fixed["skipped"], fixed["more"]) == (2, 0, False)
        await wait_quiet(stack, account, within=30)
        held = await unisender_contacts(stack, account)
        assert held["info@acme.test"]["fields"]["Name"] == "Info Desk"
        assert held["sales@acme.test"]["fields"]["Name"] == "Sales Team"
        assert str(account.list_id) in {str(k) for k in held["info@acme.test"]["lists"]}
        assert await _letters(stack, account) == {}
        assert (await _outbox(stack, "info@acme.test"))["status"] == "done"

        # Again: a no-op, by ids and by all.
        imports = (await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/ledger/summary")).json()
        noop = await _act(stack, account, "replay", {"ids": [info_id, sales_id]})
        assert (noop["replayed"], noop["skipped"]) == (0, 2)
        noop_all = await _act(stack, account, "replay", {"all": True})
        assert (noop_all["replayed"], noop_all["requested"]) == (0, 0)
        await wait_quiet(stack, account, within=10)
        after = (await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/ledger/summary")).json()
        assert after["rows"] == imports["rows"]  # nothing was sent again

        # Discard: a row refused again is given up on and leaves the list, its reason kept.
        _role_addresses(stack, refused=True)
        help_desk = await _create(stack, account, "Help Desk", "all@acme.test")
        await wait_quiet(stack, account, within=30)
        row = await _outbox(stack, "all@acme.test")
        letter_id = f"outbox:{row['id']}"
        assert letter_id in await _letters(stack, account, kind="outbox")
        dropped = await _act(stack, account, "discard", {"ids": [letter_id]})
        assert (dropped["discarded"], dropped["skipped"]) == (1, 0)
        assert await _letters(stack, account) == {}
        row = await _outbox(stack, "all@acme.test")
        assert (row["status"], row["reject_code"]) == ("discarded", "role_address")
        assert (await _act(stack, account, "discard", {"ids": [letter_id]}))["discarded"] == 0

        # A later change of its contact is a new desire for the address: the row is pending again and pushed.
        _role_addresses(stack, refused=False)
        await _rename(stack, account, help_desk, "Help Desk 2")
        await wait_quiet(stack, account, within=30)
        assert (await _outbox(stack, "all@acme.test"))["status"] == "done"
        assert (await unisender_contacts(stack, account))["all@acme.test"]["fields"]["Name"] == "Help Desk 2"

    # Every action is recorded: who, when, what it changed.
    r = await stack.api.get(
        f"/accounts/{account.account_id}/dead-letters/actions", headers=stack.admin_headers
    )
    actions = r.json()["actions"]
    assert [(a["operation"], a["affected"], a["skipped"]) for a in actions] == [
        ("discard", 0, 1),
        ("discard", 1, 0),
        ("replay", 0, 0),
        ("replay", 0, 2),
        ("replay", 2, 0),
        ("replay", 1, 0),
    ]
    assert {a["actor"] for a in actions} == {"operator"}
    assert actions[4]["items"] == {"outbox": sorted([info["id"], sales["id"]])}
    assert actions[4]["selected_all"] is True
    assert actions[-1]["at"] < actions[0]["at"]


POISON = "Poison Pill"


@asynccontextmanager
async def _poison(stack: Stack) -> AsyncIterator[None]:
    """PostgreSQL refuses any contact named ``POISON`` (a constraint on the shared test database, dropped
    after): an event carrying such a version cannot be applied, for a reason outside our code."""
    await raw_sql(
        _url(stack), f"ALTER TABLE contact ADD CONSTRAINT dl_poison CHECK (name NOT LIKE '%{POISON}%')"
    )
    try:
        yield
    finally:
        await raw_sql(_url(stack), "ALTER TABLE contact DROP CONSTRAINT IF EXISTS dl_poison")


async def test_a_failed_event_replayed_once_its_cause_is_gone_reaches_unisender(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "MAX_EVENT_ATTEMPTS", 1)  # failed at its first attempt alone
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        ann = await _create(stack, account, "Ann", "ann@acme.test")
        await wait_quiet(stack, account, within=30)
        async with _poison(stack):
            await _rename(stack, account, ann, f"Ann {POISON}")

            async def failed() -> bool:
                rows = await raw_sql(_url(stack), "SELECT 1 FROM webhook_event WHERE status = 'failed'")
                return bool(rows)

            await wait_for(failed, within=30, what="the poisoned event to fail")
            [letter] = (await _letters(stack, account, kind="event")).values()
            assert (letter["status"], letter["reason"], letter["attempts"]) == (
                "failed",
                "could not be applied",
                1,
            )
            assert "dl_poison" in letter["error"]
            assert letter["detail"] == "kommo"
        assert (await unisender_contacts(stack, account))["ann@acme.test"]["fields"]["Name"] == "Ann"

        # The cause gone, the event replays through the normal path: applied, and its change pushed.
        result = await _act(stack, account, "replay", {"ids": [letter["id"]]})
        assert (result["replayed"], result["by_kind"]) == (1, {"event": {"affected": 1, "skipped": 0}})
        await wait_quiet(stack, account, within=30)
        assert (await unisender_contacts(stack, account))["ann@acme.test"]["fields"][
            "Name"
        ] == f"Ann {POISON}"
        assert await _letters(stack, account) == {}
        [event] = await raw_sql(
            _url(stack),
            "SELECT status, attempts, last_error FROM webhook_event WHERE id = $1",
            letter["row_id"],
        )
        assert (event["status"], event["last_error"]) == ("done", None)
        again = await _act(stack, account, "replay", {"ids": [letter["id"]]})
        assert (again["replayed"], again["skipped"]) == (0, 1)
