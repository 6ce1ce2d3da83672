"""A forged future ``updated_at`` cannot pin a contact (item 2 of the hardening issue).

Webhook versions stamped more than a few minutes ahead are not believed: their contact is read from Kommo's
REST API instead. And what a full sync, reconcile or verification reads from Kommo is the truth as of the
read: it replaces what we stored before, whatever that version's timestamp, so a contact pinned in the past
(before this rule existed) is corrected by the next full sync.
"""

from __future__ import annotations

import time
from datetime import timedelta

from app.connectors.base import CrmContact
from app.context import ProcessContext, build_context
from app.db.base import utcnow
from app.db.locks import account_lock
from app.queue import enqueue
from app.sync import contacts_repo, service
from tests.conftest import Stack, raw_sql, running_worker
from tests.faults.support import post_webhook
from tests.support.e2e import (
    Account,
    assert_mirror_exact,
    connect_account,
    create_contact,
    unisender_contacts,
    wait_quiet,
)

TEN_YEARS = 10 * 365 * 86400
EVIL = "evil@attacker.example"


def _url(stack: Stack) -> str:
    assert stack.settings.database_url
    return stack.settings.database_url


async def _stored(stack: Stack, cid: int) -> dict[str, object]:
    [row] = await raw_sql(
        _url(stack), "SELECT name, emails, kommo_updated_at FROM contact WHERE kommo_id=$1", cid
    )
    return dict(row)


async def _full_sync_done(stack: Stack, account: Account) -> None:
    r = await stack.api.post("/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id})
    assert r.status_code == 202, r.text
    await wait_quiet(stack, account, within=30)
    run = (await stack.api.get(f"/sync/runs/{r.json()['run_id']}", headers=stack.admin_headers)).json()
    assert run["status"] == "done", run


async def test_forged_future_version_is_refused_then_real_edits_and_full_sync_apply(stack: Stack) -> None:
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        ann = await create_contact(stack, account, "Ann", "ann@example.com")
        await wait_quiet(stack, account, within=20)
        forged = (
            f"account[id]={account.account_id}&contacts[update][0][id]={ann}"
            f"&contacts[update][0][name]=Forged&contacts[update][0][updated_at]={int(time.time()) + TEN_YEARS}"
            "&contacts[update][0][custom_fields][0][code]=EMAIL"
            f"&contacts[update][0][custom_fields][0][values][0][value]={EVIL}"
        )
        r = await post_webhook(stack.api, account, forged)
        assert r.status_code == 200, r.text
        await wait_quiet(stack, account, within=20)
        # Not believed: the contact was read from Kommo instead, so nothing of the forgery is stored or sent.
        stored = await _stored(stack, ann)
        assert stored["name"] == "Ann"
        assert stored["kommo_updated_at"] < time.time() + 60  # type: ignore[operator]
        assert EVIL not in await unisender_contacts(stack, account)

        r = await stack.kommo.patch(
            f"/_sandbox/accounts/{account.subdomain}/contacts", json=[{"id": ann, "name": "Ann Real"}]
        )
        assert r.status_code == 200, r.text
        await wait_quiet(stack, account, within=20)
        assert (await _stored(stack, ann))["name"] == "Ann Real"
        assert (await unisender_contacts(stack, account))["ann@example.com"]["fields"]["Name"] == "Ann Real"

        await _full_sync_done(stack, account)
        await assert_mirror_exact(stack, account)


async def test_full_sync_corrects_a_contact_pinned_by_a_future_version(stack: Stack) -> None:
    """A contact pinned before the refusal existed (a webhook version dated years ahead, with an injected
    address pushed to Unisender) is put right by the next full sync, in our tables and in Unisender."""
    account = await connect_account(stack, contacts=20, seed=8)
    async with running_worker(stack.settings):
        await _full_sync_done(stack, account)
        [target] = await raw_sql(
            _url(stack), "SELECT kommo_id, name, emails FROM contact WHERE emails::text LIKE '%@%' LIMIT 1"
        )
        pc = await build_context(stack.settings)
        try:
            await _apply_as_a_webhook(pc, account.account_id, target["kommo_id"], "Pinned")
        finally:
            await pc.close()
        await wait_quiet(stack, account, within=20)
        assert EVIL in await unisender_contacts(stack, account)  # the state this test starts from

        await _full_sync_done(stack, account)
        stored = await _stored(stack, target["kommo_id"])
        assert stored["name"] == target["name"]
        assert stored["kommo_updated_at"] < time.time() + 60  # type: ignore[operator]
        assert EVIL not in await unisender_contacts(stack, account)
        await assert_mirror_exact(stack, account)


async def _apply_as_a_webhook(pc: ProcessContext, account_id: int, kommo_id: int, name: str) -> None:
    """What a forged webhook did before versions from the future were refused: applied as newer."""
    pinned = CrmContact(id=kommo_id, name=name, updated_at=int(time.time()) + TEN_YEARS, emails=(EVIL,))
    async with pc.db.session_scope() as session:
        await account_lock(session, account_id)
        applied = await service.apply_contacts(session, account_id, [pinned])
        await service.recompute(session, account_id, applied.affected)
    await enqueue.flush_outbox(pc.queue, account_id, delay=0)


# --- the rule itself, against the real database -----------------------------------------------------------


async def _row(ctx: ProcessContext, kommo_id: int) -> tuple[str, int, object]:
    async with ctx.db.session_scope() as session:
        row = (await contacts_repo.contacts_by_ids(session, 1, [kommo_id]))[kommo_id]
        return row.name, row.kommo_updated_at, row.updated_at


async def _apply(ctx: ProcessContext, contact: CrmContact, **kwargs: object) -> int:
    async with ctx.db.session_scope() as session:
        return (await service.apply_contacts(session, 1, [contact], **kwargs)).changed  # type: ignore[arg-type]


async def test_a_read_replaces_what_was_stored_before_it_and_only_that(ctx: ProcessContext) -> None:
    before_write = utcnow() - timedelta(seconds=5)
    assert await _apply(ctx, CrmContact(id=7, name="Webhook", updated_at=2_000, emails=("a@example.com",)))
    # A page requested before the row was written (a webhook applied while the page was on its way) is
    # older than what we hold: a version with an older timestamp does not replace it.
    stale = CrmContact(id=7, name="Stale page", updated_at=1_000, emails=("a@example.com",))
    assert await _apply(ctx, stale, read_at=before_write) == 0
    assert (await _row(ctx, 7))[:2] == ("Webhook", 2_000)
    # Read after the row was written: the truth as of now, whatever the timestamps say.
    truth = CrmContact(id=7, name="Truth", updated_at=1_000, emails=("a@example.com",))
    assert await _apply(ctx, truth, read_at=utcnow()) == 1
    name, updated_at, written = await _row(ctx, 7)
    assert (name, updated_at) == ("Truth", 1_000)
    # The same again: identical, so not rewritten (a full sync over an unchanged account writes nothing).
    assert await _apply(ctx, truth, read_at=utcnow()) == 0
    assert (await _row(ctx, 7))[2] == written
    # Webhook versions still need a newer timestamp.
    assert await _apply(ctx, CrmContact(id=7, name="Older hook", updated_at=999)) == 0
    assert (await _row(ctx, 7))[0] == "Truth"
