"""Two edits of one contact within one second: Kommo stamps changes in whole seconds, so both webhook versions
may carry the same ``updated_at``, and only a strictly newer stamp applies. A version that ties with the one we
hold, or with another of its batch, and says something else is read from Kommo instead, so the later edit is
mirrored rather than dropped."""

from __future__ import annotations

import time

from app.connectors.base import CrmContact
from app.context import build_context
from app.sync.events import process_kommo_events, tied_in_batch
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import (
    connect_account,
    create_contact,
    unisender_contacts,
    wait_for,
    wait_quiet,
)


async def test_the_later_of_two_edits_in_one_second_is_mirrored(stack: Stack) -> None:
    account = await connect_account(stack)
    r = await stack.kommo.patch("/_sandbox/config", json={"same_second_stamps": True})
    assert r.status_code == 200, r.text
    url = stack.settings.database_url
    assert url
    async with running_worker(stack.settings):
        ann = await create_contact(stack, account, "Ann", "ann@example.com")
        await wait_quiet(stack, account, within=20)
        base = f"/_sandbox/accounts/{account.subdomain}/contacts"
        # The first edit stamped a minute ahead (a clock Kommo may run ahead by; believed), so the second,
        # made within that same second of Kommo's clock, keeps the stamp whenever it is made.
        stamp = int(time.time()) + 60
        r = await stack.kommo.patch(base, json=[{"id": ann, "name": "Ann First", "updated_at": stamp}])
        assert r.status_code == 200, r.text
        await wait_quiet(stack, account, within=20)  # the first applied on its own: the tie is with the row
        r = await stack.kommo.patch(base, json=[{"id": ann, "name": "Ann Second"}])
        assert r.status_code == 200, r.text
        assert (await stack.kommo.get(f"{base}/{ann}")).json()["updated_at"] == stamp  # a tie

        async def mirrored() -> bool:
            held = await unisender_contacts(stack, account)
            return bool(held.get("ann@example.com", {}).get("fields", {}).get("Name") == "Ann Second")

        await wait_for(mirrored, within=20, what="the second edit mirrored")
        [row] = await raw_sql(url, "SELECT name, kommo_updated_at FROM contact WHERE kommo_id = $1", ann)
        assert (row["name"], row["kommo_updated_at"]) == ("Ann Second", stamp)


async def test_a_tie_is_left_alone_while_platform_values_wait_to_be_written(stack: Stack) -> None:
    """Our copy holds a platform value ahead of Kommo on purpose while its write is pending: a tie must not
    replace it with what Kommo holds (the webhook of the write settles the contact)."""
    account = await connect_account(stack)
    r = await stack.kommo.patch("/_sandbox/config", json={"same_second_stamps": True})
    assert r.status_code == 200, r.text
    url = stack.settings.database_url
    assert url
    base = f"/_sandbox/accounts/{account.subdomain}/contacts"
    pc = await build_context(stack.settings)  # no worker: nothing writes the pending value meanwhile

    async def drained() -> None:
        r = await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 10})
        assert r.status_code == 200, r.text
        await process_kommo_events(pc, account.account_id)

    try:
        ann = await create_contact(stack, account, "Ann", "ann@example.com")
        stamp = int(time.time()) + 60
        r = await stack.kommo.patch(base, json=[{"id": ann, "name": "Ann First", "updated_at": stamp}])
        assert r.status_code == 200, r.text
        await drained()
        await raw_sql(
            url,
            "INSERT INTO crm_write (account_id, kommo_id, email, source, field_type, target, value, unisender_at,"
            " state, created_at) VALUES ($1, $2, 'ann@example.com', 'name', 'text', 'Name', 'Ann First', now(),"
            " 'pending', now())",
            account.account_id,
            ann,
        )
        r = await stack.kommo.patch(base, json=[{"id": ann, "name": "Ann Second"}])
        assert r.status_code == 200, r.text
        await stack.kommo.delete("/_sandbox/stats")
        await drained()
        stats = (await stack.kommo.get("/_sandbox/stats")).json()
        assert stats["calls"].get("GET /api/v4/contacts", 0) == 0  # not verified
        [row] = await raw_sql(url, "SELECT name FROM contact WHERE kommo_id = $1", ann)
        assert row["name"] == "Ann First"

        # Once the value is written (or given up), the same tie is verified again.
        await raw_sql(url, "UPDATE crm_write SET state = 'done' WHERE kommo_id = $1", ann)
        r = await stack.kommo.patch(base, json=[{"id": ann, "name": "Ann Third"}])
        assert r.status_code == 200, r.text
        await drained()
        [row] = await raw_sql(url, "SELECT name FROM contact WHERE kommo_id = $1", ann)
        assert row["name"] == "Ann Third"
    finally:
        await pc.close()


def _version(name: str, stamp: int, cid: int = 1) -> CrmContact:
    return CrmContact(id=cid, name=name, updated_at=stamp, emails=("a@example.com",))


def test_a_batch_ties_only_on_differing_versions_with_the_latest_stamp() -> None:
    assert tied_in_batch([_version("A", 10), _version("B", 10)]) == {1}
    assert tied_in_batch([_version("A", 10), _version("A", 10)]) == set()  # a repeated delivery
    assert tied_in_batch([_version("A", 10), _version("B", 10), _version("C", 11)]) == set()  # 11 is later
    assert tied_in_batch([_version("A", 11), _version("B", 10), _version("C", 10)]) == set()
    assert tied_in_batch([_version("A", 10, cid=1), _version("B", 10, cid=2)]) == set()
