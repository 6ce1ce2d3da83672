"""The ``responsible_user`` source: user names are read from Kommo's users API when a spec maps them, and
the cron's refresh picks up a user added later (re-deriving the account), so a contact handed to a new
colleague shows that colleague's name in Unisender."""

from __future__ import annotations

import pytest

from app.context import build_context
from app.sync import specs
from tests.conftest import Stack, running_worker
from tests.support.e2e import connect_account, wait_for, wait_quiet

pytestmark = pytest.mark.slow


async def _manager_of(stack: Stack, api_key: str, email: str) -> str:
    r = await stack.unisender.get(f"/_sandbox/accounts/{api_key}/snapshot")
    return str(r.json()["contacts"].get(email, {}).get("fields", {}).get("Manager", ""))


async def test_a_new_responsible_user_is_named_after_the_users_refresh(stack: Stack) -> None:
    account = await connect_account(stack, contacts=30, seed=5, custom_fields=True)
    api, headers = stack.api, stack.admin_headers
    spec = {
        "fields": [{"source": "name", "target": "Name"}, {"source": "responsible_user", "target": "Manager"}],
        "lists": [{"list_id": account.list_id, "all": True}],
        "create_missing": True,
    }
    kommo = stack.kommo_app.state.kommo.accounts[account.subdomain]
    email_field = kommo.field_by_code("EMAIL").id
    contact = next(c for c in kommo.contacts.values() if any(fid == email_field for fid, _ in c.fields))
    email = str(next(vals for fid, vals in contact.fields if fid == email_field)[0][0]).lower()
    async with running_worker(stack.settings):
        r = await api.put(f"/integration/{account.account_id}/mapping", headers=headers, json=spec)
        assert r.status_code == 200, r.text
        r = await api.post("/sync/contacts", headers=headers, json={"id": account.account_id})
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account, within=60)
        names = {u.id: u.name for u in kommo.users}
        assert await _manager_of(stack, account.api_key, email) == names[contact.responsible_user_id]

        r = await stack.kommo.post(
            f"/_sandbox/accounts/{account.subdomain}/users", json={"name": "Nova Person"}
        )
        assert r.status_code == 201, r.text
        new_user = r.json()["id"]
        item = {"id": contact.id, "responsible_user_id": new_user}
        r = await stack.kommo.patch(f"/_sandbox/accounts/{account.subdomain}/contacts", json=[item])
        assert r.status_code == 200, r.text
        await wait_quiet(stack, account, within=30)
        assert await _manager_of(stack, account.api_key, email) == ""  # not known yet: empty, not an id

        pc = await build_context(stack.settings)
        try:
            assert await specs.refresh_mapped_users(pc, account.account_id)
            assert not await specs.refresh_mapped_users(pc, account.account_id)  # nothing new the second time
        finally:
            await pc.close()

        async def named() -> bool:
            return await _manager_of(stack, account.api_key, email) == "Nova Person"

        await wait_for(named, within=30, what="the new responsible user's name in Unisender")
