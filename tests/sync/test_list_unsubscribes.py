"""Per-list unsubscribes end to end: with a spec of two lists (everyone → the account's list, tag "vip" → VIP),
a contact that leaves VIP in Unisender is tagged ``<unsubscribe_tag>:VIP`` in Kommo, stays active in the base
list with its fields still flowing, and is never put back in VIP, whatever its tags do; leaving everything
afterwards is an account-wide unsubscribe: consent recorded, tagged, nothing pushed any more.

The tag prefix is set to a non-default value here, so the test sees that it comes from the settings."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import Settings
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, kommo_contacts, wait_for, wait_quiet

pytestmark = pytest.mark.slow

EMAIL = "vera@example.com"
BYSTANDER = "otto@example.com"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Not the default "unsubscribed": a hard-coded prefix anywhere would show.
    return settings.model_copy(update={"unsubscribe_tag": "optout"})


async def _create(stack: Stack, account: Account, name: str, email: str, tags: list[str]) -> int:
    r = await stack.kommo.post(
        f"/_sandbox/accounts/{account.subdomain}/contacts",
        json=[
            {
                "name": name,
                "custom_fields_values": [{"field_code": "EMAIL", "values": [{"value": email}]}],
                "_embedded": {"tags": [{"name": t} for t in tags]},
            }
        ],
    )
    assert r.status_code == 200, r.text
    cid: int = r.json()["_embedded"]["contacts"][0]["id"]
    return cid


async def _edit(stack: Stack, account: Account, item: dict[str, Any]) -> None:
    r = await stack.kommo.patch(f"/_sandbox/accounts/{account.subdomain}/contacts", json=[item])
    assert r.status_code == 200, r.text


async def _held(stack: Stack, account: Account, email: str) -> dict[str, Any]:
    r = await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/snapshot")
    assert r.status_code == 200, r.text
    held: dict[str, Any] = r.json()["contacts"][email]
    return held


def _membership(held: dict[str, Any]) -> dict[int, str]:
    return {int(k): m["status"] for k, m in held["lists"].items()}


async def _imports_of(stack: Stack, account: Account, email: str) -> int:
    """Rows Unisender ever accepted for the address (its import ledger)."""
    r = await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/ledger", params={"email": email})
    assert r.status_code == 200, r.text
    total: int = r.json()["total"]
    return total


async def _consent(stack: Stack, email: str) -> str | None:
    rows = await raw_sql(
        stack.settings.database_url or "", "SELECT consent FROM contact_email WHERE email = $1", email
    )
    return str(rows[0]["consent"]) if rows else None


async def _unsubscribe(stack: Stack, account: Account, email: str, list_id: int | None) -> None:
    """The contact clicks the unsubscribe link in Unisender; the sandbox calls our hook."""
    r = await stack.unisender.post(
        f"/_sandbox/accounts/{account.api_key}/contacts/{email}/unsubscribe", json={"list_id": list_id}
    )
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True, r.text


async def test_a_list_unsubscribe_keeps_the_address_out_of_that_list_only(stack: Stack) -> None:
    tag = stack.settings.unsubscribe_tag
    assert tag == "optout"  # the override reached the service and its worker
    account = await connect_account(stack)
    base = account.list_id
    spec = {
        "fields": [{"source": "name", "target": "Name"}],
        "lists": [{"list_id": base, "all": True}, {"list_title": "VIP", "tag": "vip"}],
        "create_missing": True,
    }
    async with running_worker(stack.settings):
        r = await stack.api.put(
            f"/integration/{account.account_id}/mapping", headers=stack.admin_headers, json=spec
        )
        assert r.status_code == 200, r.text
        vip = next(rule["list_id"] for rule in r.json()["lists"] if rule["tag"] == "vip")
        cid = await _create(stack, account, "Vera", EMAIL, ["vip"])
        await _create(stack, account, "Otto", BYSTANDER, ["vip"])
        await wait_quiet(stack, account)
        before = await _held(stack, account, EMAIL)
        assert _membership(before) == {base: "active", vip: "active"}
        assert before["status"] != "unsubscribed"

        # Vera leaves VIP only.
        await _unsubscribe(stack, account, EMAIL, vip)

        async def tagged(name: str) -> bool:
            return name in (await kommo_contacts(stack, account))[cid]["tags"]  # type: ignore[operator]

        await wait_for(lambda: tagged(f"{tag}:VIP"), within=30, what=f"{tag}:VIP on the contact")
        await wait_quiet(stack, account)
        held = await _held(stack, account, EMAIL)
        assert (held["status"], _membership(held)) == (
            before["status"],
            {base: "active", vip: "unsubscribed"},
        )
        assert await _consent(stack, EMAIL) != "unsubscribed"  # not an account-wide unsubscribe
        assert tag not in (await kommo_contacts(stack, account))[cid]["tags"]  # type: ignore[operator]

        # Her fields keep flowing to the base list.
        await _edit(stack, account, {"id": cid, "name": "Vera Renamed"})

        await wait_for(
            lambda: _name_is(stack, account, EMAIL, "Vera Renamed"),
            within=30,
            what="the rename reaches Unisender",
        )

        # The tag that selects VIP goes and comes back: she is not put back in VIP (nor taken out of it,
        # which would lose Unisender's mark), and the others of the segment are not affected.
        await _edit(stack, account, {"id": cid, "tags_to_delete": [{"name": "vip"}]})
        await wait_quiet(stack, account)
        assert _membership(await _held(stack, account, EMAIL)) == {base: "active", vip: "unsubscribed"}
        await _edit(stack, account, {"id": cid, "tags_to_add": [{"name": "vip"}]})
        await wait_quiet(stack, account)
        assert _membership(await _held(stack, account, EMAIL)) == {base: "active", vip: "unsubscribed"}
        assert _membership(await _held(stack, account, BYSTANDER)) == {base: "active", vip: "active"}
        # A remap of the account (a spec saved again) does not re-join her either.
        r = await stack.api.put(
            f"/integration/{account.account_id}/mapping", headers=stack.admin_headers, json=spec
        )
        assert r.status_code == 200, r.text
        await wait_quiet(stack, account)
        assert _membership(await _held(stack, account, EMAIL)) == {base: "active", vip: "unsubscribed"}

        # Now she leaves everything: an account-wide unsubscribe.
        await _unsubscribe(stack, account, EMAIL, None)

        async def consent_recorded() -> bool:
            return await _consent(stack, EMAIL) == "unsubscribed"

        await wait_for(consent_recorded, within=30, what="consent = unsubscribed")
        await wait_for(lambda: tagged(tag), within=30, what=f"{tag} on the contact")
        await wait_quiet(stack, account)
        imports = await _imports_of(stack, account, EMAIL)
        await _edit(stack, account, {"id": cid, "name": "Vera Again"})
        await _edit(stack, account, {"id": cid, "tags_to_delete": [{"name": "vip"}]})
        await wait_quiet(stack, account)
        # A bystander's edit goes through the same hooks and pushes: proof the quiet above saw them done.
        await _edit(stack, account, {"id": (await _bystander_id(stack, account)), "name": "Otto Renamed"})
        await wait_for(
            lambda: _name_is(stack, account, BYSTANDER, "Otto Renamed"), within=30, what="Otto's rename"
        )
        await wait_quiet(stack, account)
    held = await _held(stack, account, EMAIL)
    assert held["fields"]["Name"] == "Vera Renamed"  # not "Vera Again": nothing was pushed for her
    assert await _imports_of(stack, account, EMAIL) == imports
    assert held["status"] == "unsubscribed"


async def _bystander_id(stack: Stack, account: Account) -> int:
    contacts = await kommo_contacts(stack, account)
    return next(cid for cid, c in contacts.items() if BYSTANDER in c["emails"])  # type: ignore[operator]


async def _name_is(stack: Stack, account: Account, email: str, name: str) -> bool:
    return bool((await _held(stack, account, email))["fields"].get("Name") == name)
