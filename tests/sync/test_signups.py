"""Newsletter signups end to end: with a spec mapping a list with tag "newsletter" and ``create_contacts``,
addresses that sign up to it through a form in Unisender become Kommo contacts, one each, with their
address, the tag and the name typed into the form, whatever the duplicated and concurrent deliveries and
the second mapped list an address joins; an address a contact already holds is linked, not created; and
with ``create_contacts`` off a signup is recorded only. The mirror then owns the new contacts' addresses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.config import Settings
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, kommo_contacts, wait_for, wait_quiet

pytestmark = pytest.mark.slow

SIGNUPS = 50
KEPT = "kept@example.com"  # held by a Kommo contact before it signs up


# Kommo's 7 calls a second would make the 50 look-ups alone take 7 s; the pacing is not what is tested here.
KOMMO_RATE = 25


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"kommo_rate_per_second": KOMMO_RATE})


def _email(i: int) -> str:
    return f"reader{i}@example.com"


async def _spec(stack: Stack, account: Account, *, create_contacts: bool) -> int:
    """Store the spec (everyone → the account's list; tag newsletter → "Newsletter"); the newsletter list id."""
    spec = {
        "fields": [{"source": "name", "target": "Name"}],
        "lists": [
            {"list_id": account.list_id, "all": True},
            {"list_title": "Newsletter", "tag": "newsletter"},
        ],
        "create_missing": True,
        "create_contacts": create_contacts,
    }
    r = await stack.api.put(
        f"/integration/{account.account_id}/mapping", headers=stack.admin_headers, json=spec
    )
    assert r.status_code == 200, r.text
    assert r.json()["create_contacts"] is create_contacts
    news: int = next(rule["list_id"] for rule in r.json()["lists"] if rule["tag"] == "newsletter")
    return news


async def _sign_up(stack: Stack, account: Account, list_id: int, email: str, name: str) -> None:
    """The address fills in Unisender's signup form; the sandbox calls our hook with a ``subscribe``."""
    r = await stack.unisender.post(
        f"/_sandbox/accounts/{account.api_key}/lists/{list_id}/signups",
        json={"email": email, "fields": {"Name": name}},
    )
    assert r.status_code == 200, r.text


async def _redeliver(stack: Stack, account: Account, events: list[tuple[str, int]], second: int) -> None:
    """The same subscribes delivered again (another event time: the inbox cannot tell them from new ones)."""
    body = {
        "events": [
            {
                "event_name": "subscribe",
                "event_time": f"2026-11-30 10:00:{second:02d}",
                "event_data": {"email": email, "list_id": list_id},
            }
            for email, list_id in events
        ]
    }
    r = await stack.unisender.post(f"/_sandbox/accounts/{account.api_key}/hook-events", json=body)
    assert r.status_code == 200, r.text


async def _signups(stack: Stack, account: Account) -> dict[str, dict[str, Any]]:
    rows = await raw_sql(
        stack.settings.database_url or "",
        "SELECT email, state, kommo_id, list_ids::text AS lists, last_error FROM signup WHERE account_id = $1",
        account.account_id,
    )
    return {r["email"]: dict(r) for r in rows}


def _holders(contacts: dict[int, dict[str, object]], email: str) -> list[int]:
    return [cid for cid, c in contacts.items() if email in c["emails"]]  # type: ignore[operator]


async def test_signups_become_one_tagged_contact_each_or_are_recorded(stack: Stack) -> None:
    stack.kommo_app.state.kommo.config.rate_limit_rps = KOMMO_RATE
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        news = await _spec(stack, account, create_contacts=True)
        # In Kommo, and unknown to the mirror (no webhook): only the look-up in Kommo can tell.
        r = await stack.kommo.post(
            f"/_sandbox/accounts/{account.subdomain}/contacts",
            params={"webhooks": "0"},
            json=[
                {
                    "name": "Kept",
                    "custom_fields_values": [{"field_code": "EMAIL", "values": [{"value": KEPT}]}],
                }
            ],
        )
        assert r.status_code == 200, r.text
        kept = r.json()["_embedded"]["contacts"][0]["id"]
        before = await kommo_contacts(stack, account)

        # 50 signups, concurrently, with redeliveries among them; reader0 also joins the base list.
        forms = [_sign_up(stack, account, news, _email(i), f"Reader {i}") for i in range(SIGNUPS)]
        again = [(_email(i), news) for i in range(0, SIGNUPS, 5)] + [(_email(0), account.list_id)]
        await asyncio.gather(
            *forms[:25],
            _redeliver(stack, account, again, 1),
            *forms[25:],
            _sign_up(stack, account, news, KEPT, "Kept"),
            _sign_up(stack, account, account.list_id, _email(0), "Reader 0"),
        )
        await _redeliver(stack, account, again, 2)

        async def settled() -> bool:
            rows = await _signups(stack, account)
            return len(rows) == SIGNUPS + 1 and all(r["state"] != "pending" for r in rows.values())

        await wait_for(settled, within=40, what="every signup settled")

        # Without create_contacts, a signup is recorded only.
        await _spec(stack, account, create_contacts=False)
        # The new spec's remap holds the account's lock; events arriving meanwhile would wait for a sweep.
        await wait_quiet(stack, account)
        for email in ("late1@example.com", "late2@example.com"):
            await _sign_up(stack, account, news, email, "Late")

        async def recorded() -> bool:
            return len(await _signups(stack, account)) == SIGNUPS + 3

        await wait_for(recorded, within=20, what="the late signups recorded")
        await wait_quiet(stack, account)

    rows = await _signups(stack, account)
    states = {e: r["state"] for e, r in rows.items()}
    assert states == {KEPT: "linked", "late1@example.com": "recorded", "late2@example.com": "recorded"} | {
        _email(i): "created" for i in range(SIGNUPS)
    }, {e: r["last_error"] for e, r in rows.items() if r["last_error"]}
    assert rows[KEPT]["kommo_id"] == kept
    assert rows[_email(0)]["lists"] == f"[{news},{account.list_id}]"
    contacts = await kommo_contacts(stack, account)
    assert len(contacts) == len(before) + SIGNUPS
    for i in range(SIGNUPS):
        (cid,) = _holders(contacts, _email(i))
        assert rows[_email(i)]["kommo_id"] == cid
        assert (contacts[cid]["name"], contacts[cid]["tags"]) == (f"Reader {i}", ["newsletter"])
    assert _holders(contacts, KEPT) == [kept]
    assert "newsletter" not in contacts[kept]["tags"]  # type: ignore[operator]
    assert not _holders(contacts, "late1@example.com")

    # The mirror owns the new addresses: the names typed into the form stay, in both lists.
    r = await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/snapshot")
    held = r.json()["contacts"]
    for i in range(SIGNUPS):
        assert held[_email(i)]["fields"]["Name"] == f"Reader {i}"
        assert {int(k): m["status"] for k, m in held[_email(i)]["lists"].items()} == {
            account.list_id: "active",
            news: "active",
        }
    r = await stack.api.get(f"/accounts/{account.account_id}", headers=stack.admin_headers)
    assert r.json()["signups"] == {"created": SIGNUPS, "linked": 1, "recorded": 2}
