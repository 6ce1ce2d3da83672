"""The mirror's rules (``app.sync.service``) on the real database, each test inside a rolled-back transaction:
which contact versions apply, which address each contact owns, and what the outbox is told."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectors.base import CrmContact
from app.db.base import utcnow
from app.db.models import Contact, ContactEmail, Outbox
from app.db.states import Consent, OutboxStatus
from app.sync import consent_repo, outbox_repo, service
from app.sync.mapping import OUTCOME_UNKNOWN, payload_hash

_IDS = itertools.count(random.randrange(10**12, 10**13, 10**6))


@pytest.fixture
def account() -> int:
    """An account id no other test (nor any committed data of the integration tests) uses."""
    return next(_IDS)


def _contact(id_: int, updated_at: int, *emails: str, name: str = "") -> CrmContact:
    return CrmContact(id=id_, name=name or f"C{id_}@{updated_at}", updated_at=updated_at, emails=emails)


async def _backdate(session: AsyncSession, account: int, when: datetime) -> None:
    """Date the account's rows as written at ``when`` (before the reads of a test's story)."""
    await session.execute(update(Contact).where(Contact.account_id == account).values(updated_at=when))


async def _stored(session: AsyncSession, account: int, kommo_id: int) -> Contact:
    stmt = select(Contact).where(Contact.account_id == account, Contact.kommo_id == kommo_id)
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one()


async def _outbox(session: AsyncSession, account: int) -> dict[str, Outbox]:
    stmt = select(Outbox).where(Outbox.account_id == account).execution_options(populate_existing=True)
    return {row.email: row for row in (await session.execute(stmt)).scalars()}


def _added(name: str) -> dict[str, object]:
    """The default spec's payload of an address owned by a contact named ``name`` (the test accounts have
    no Unisender list: no list to join)."""
    return {
        "delete": False,
        "fields": {"Name": name},
        "phone": "",
        "lists": [],
        "excluded": [],
        "unsubscribed": [],
    }


def _hash(name: str) -> str:
    return payload_hash(_added(name))


# --- apply_contacts ----------------------------------------------------------------------------------------


async def test_a_webhook_version_applies_only_when_newer(session: AsyncSession, account: int) -> None:
    first = await service.apply_contacts(session, account, [_contact(1, 100, "A@x.io", name="v100")])
    assert (first.changed, first.affected) == (1, {"a@x.io"})
    older = await service.apply_contacts(session, account, [_contact(1, 99, "b@x.io", name="v99")])
    equal = await service.apply_contacts(session, account, [_contact(1, 100, "b@x.io", name="other")])
    assert (older.changed, older.affected, equal.changed) == (0, set(), 0)
    newer = await service.apply_contacts(session, account, [_contact(1, 101, "b@x.io", name="v101")])
    assert (newer.changed, newer.affected) == (1, {"a@x.io", "b@x.io"})  # the released address too
    row = await _stored(session, account, 1)
    assert (row.name, row.emails, row.kommo_updated_at) == ("v101", ["b@x.io"], 101)


async def test_the_latest_of_several_versions_in_one_call_wins(session: AsyncSession, account: int) -> None:
    versions = [_contact(1, 5, name="v5"), _contact(1, 7, name="v7"), _contact(1, 6, name="v6")]
    assert (await service.apply_contacts(session, account, versions)).changed == 1
    assert (await _stored(session, account, 1)).name == "v7"


async def test_a_live_read_replaces_what_was_stored_before_it_whatever_its_timestamp(
    session: AsyncSession, account: int
) -> None:
    future = 4_000_000_000  # a forged or skewed version from the future
    await service.apply_contacts(session, account, [_contact(1, future, "evil@x.io", name="Pinned")])
    read_at = utcnow() + timedelta(seconds=1)  # the row above was written before this read
    live = await service.apply_contacts(
        session, account, [_contact(1, 100, "a@x.io", name="Real")], read_at=read_at
    )
    assert (live.changed, live.affected) == (1, {"evil@x.io", "a@x.io"})
    row = await _stored(session, account, 1)
    assert (row.name, row.kommo_updated_at, row.emails) == ("Real", 100, ["a@x.io"])


async def test_a_live_read_does_not_override_a_row_written_after_it(
    session: AsyncSession, account: int
) -> None:
    read_at = utcnow() - timedelta(seconds=5)  # the page was requested before the webhook below applied
    await service.apply_contacts(session, account, [_contact(1, 200, name="Webhook")])
    stale = await service.apply_contacts(session, account, [_contact(1, 150, name="Page")], read_at=read_at)
    assert stale.changed == 0
    assert (await _stored(session, account, 1)).name == "Webhook"


async def test_an_identical_live_read_is_not_rewritten_but_marked_seen(
    session: AsyncSession, account: int
) -> None:
    contact = _contact(1, 100, "a@x.io", name="Same")
    await service.apply_contacts(session, account, [contact])
    read_at = utcnow() + timedelta(seconds=1)
    again = await service.apply_contacts(session, account, [contact], read_at=read_at, run_id="run-1")
    assert (again.changed, again.affected) == (0, set())
    assert (await _stored(session, account, 1)).seen_run_id == "run-1"


async def test_a_live_read_revives_a_deleted_contact_a_webhook_does_not(
    session: AsyncSession, account: int
) -> None:
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")])
    gone = await service.delete_contacts(session, account, [1])
    assert (gone.changed, gone.affected) == (1, {"a@x.io"})
    webhook = await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")])
    assert webhook.changed == 0  # the same version again: not proof the contact is back
    assert (await _stored(session, account, 1)).deleted_at is not None
    read_at = utcnow() + timedelta(seconds=1)
    revived = await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")], read_at=read_at)
    assert (revived.changed, revived.affected) == (1, {"a@x.io"})
    assert (await _stored(session, account, 1)).deleted_at is None


async def test_a_read_older_than_a_deletion_does_not_revive_the_contact(
    session: AsyncSession, account: int
) -> None:
    """A full-sync page fetched ahead of its commit, the contact deleted (and confirmed) meanwhile: the page's
    copy predates the deletion and must not bring the contact, or its address, back."""
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")])
    read_at = utcnow()  # the page is fetched
    await service.delete_contacts(session, account, [1])  # the deletion is confirmed while it waits
    stale = await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")], read_at=read_at)
    assert (stale.changed, stale.affected) == (0, set())
    assert (await _stored(session, account, 1)).deleted_at is not None


async def test_a_read_after_the_one_that_found_the_contact_gone_revives_it_whatever_commits_first(
    session: AsyncSession, account: int
) -> None:
    """Kommo answers a verification without the contact (read 1), the contact is restored (same version), a
    full-sync page reads it (read 2); the deletion commits first, the page after: the page is the later truth."""
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")], read_at=utcnow())
    first_read = utcnow() - timedelta(seconds=1)  # both reads were made before either commits
    page_read = first_read + timedelta(milliseconds=500)
    await _backdate(session, account, first_read - timedelta(seconds=1))
    await service.delete_contacts(session, account, [1], read_at=first_read)
    revived = await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")], read_at=page_read)
    assert (revived.changed, revived.affected) == (1, {"a@x.io"})
    assert (await _stored(session, account, 1)).deleted_at is None


async def test_a_contact_written_after_the_read_that_found_it_gone_is_not_deleted(
    session: AsyncSession, account: int
) -> None:
    """The vanish check reads Kommo, then a restore's version is applied before the check commits: the
    restore is newer than the read that found the contact missing."""
    read_at = utcnow()  # Kommo answered without contact 1
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")])  # the restore, applied since
    gone = await service.delete_contacts(session, account, [1], read_at=read_at)
    assert (gone.changed, gone.affected) == (0, set())
    assert (await _stored(session, account, 1)).deleted_at is None


async def test_a_new_holder_of_a_stopped_address_is_tagged_too(session: AsyncSession, account: int) -> None:
    """An address that takes no more mail was tagged on the contacts holding it then; a contact that gets it
    later (a returning customer added again) must carry the tag as well, so its write-back is due again."""
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")])
    await consent_repo.mark_unsubscribed(session, account, "a@x.io")
    await consent_repo.mark_list_unsubscribed(session, account, "a@x.io", 7)
    for row in await consent_repo.untagged_unsubscribes(session, account):
        row.kommo_tagged_at = utcnow()  # what the tag job records
    for lrow in await consent_repo.untagged_list_unsubscribes(session, account):
        lrow.kommo_tagged_at = utcnow()
    await session.flush()
    await service.apply_contacts(session, account, [_contact(1, 101, "a@x.io", name="Same address")])
    assert not await consent_repo.untagged_unsubscribes(session, account)  # no new holder: nothing due

    await service.apply_contacts(session, account, [_contact(2, 100, "a@x.io")])
    session.expire_all()
    assert [r.email for r in await consent_repo.untagged_unsubscribes(session, account)] == ["a@x.io"]
    assert [r.list_id for r in await consent_repo.untagged_list_unsubscribes(session, account)] == [7]


async def test_deleting_releases_addresses_and_counts_only_live_contacts(
    session: AsyncSession, account: int
) -> None:
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io", "b@x.io"), _contact(2, 100)])
    first = await service.delete_contacts(session, account, [1, 2, 3])  # 3: never seen
    assert (first.changed, first.affected) == (2, {"a@x.io", "b@x.io"})
    again = await service.delete_contacts(session, account, [1])
    assert (again.changed, again.affected) == (0, set())
    assert (await service.delete_contacts(session, account, [])).changed == 0


# --- recompute ---------------------------------------------------------------------------------------------


async def test_the_most_recently_updated_live_holder_owns_an_address(
    session: AsyncSession, account: int
) -> None:
    await service.apply_contacts(
        session,
        account,
        [
            _contact(1, 100, "a@x.io", name="Old"),
            _contact(2, 300, "a@x.io", name="Newest"),
            _contact(3, 200, "a@x.io", name="Middle"),
        ],
    )
    rec = await service.recompute(session, account, ["a@x.io"])
    assert (rec.queued, rec.unchanged, rec.suppressed) == (1, 0, 0)
    row = (await _outbox(session, account))["a@x.io"]
    assert (row.payload, row.status, row.payload_hash) == (
        _added("Newest"),
        OutboxStatus.PENDING,
        _hash("Newest"),
    )
    owner = (
        await session.execute(select(ContactEmail).where(ContactEmail.account_id == account))
    ).scalar_one()
    assert (owner.email, owner.kommo_id, owner.consent) == ("a@x.io", 2, Consent.SUBSCRIBED)


async def test_a_tie_goes_to_the_higher_crm_id(session: AsyncSession, account: int) -> None:
    await service.apply_contacts(
        session, account, [_contact(7, 100, "a@x.io", name="Seven"), _contact(9, 100, "a@x.io", name="Nine")]
    )
    await service.recompute(session, account, ["a@x.io"])
    assert (await _outbox(session, account))["a@x.io"].payload["fields"] == {"Name": "Nine"}


async def test_an_unsubscribed_address_is_never_queued_and_its_pending_desire_is_cancelled(
    session: AsyncSession, account: int
) -> None:
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io")])
    await service.recompute(session, account, ["a@x.io"])
    session.add(
        ContactEmail(account_id=account, email="b@x.io", consent=Consent.UNSUBSCRIBED, updated_at=utcnow())
    )
    await session.flush()
    assert await consent_repo.mark_unsubscribed(session, account, "a@x.io")
    await service.apply_contacts(session, account, [_contact(2, 100, "b@x.io")])
    rec = await service.recompute(session, account, ["a@x.io", "b@x.io"])
    assert (rec.queued, rec.suppressed) == (0, 2)
    rows = await _outbox(session, account)
    assert set(rows) == {"a@x.io"}  # b@x.io never got a row
    assert (rows["a@x.io"].status, rows["a@x.io"].last_error) == (OutboxStatus.CANCELLED, "unsubscribed")


async def test_a_desire_equal_to_what_the_platform_holds_sends_nothing(
    session: AsyncSession, account: int
) -> None:
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io", name="Ann")])
    await service.recompute(session, account, ["a@x.io"])
    row = (await _outbox(session, account))["a@x.io"]
    row.pushed_hash, row.status = _hash("Ann"), OutboxStatus.DONE  # what a successful push records
    await service.apply_contacts(session, account, [_contact(1, 101, "a@x.io", name="Bob")])
    assert (await service.recompute(session, account, ["a@x.io"])).queued == 1
    await service.apply_contacts(session, account, [_contact(1, 102, "a@x.io", name="Ann")])  # back again
    rec = await service.recompute(session, account, ["a@x.io"])
    assert (rec.queued, rec.unchanged) == (0, 1)
    row = (await _outbox(session, account))["a@x.io"]
    assert (row.status, row.payload["fields"]["Name"], row.payload_hash) == (
        OutboxStatus.DONE,
        "Ann",
        _hash("Ann"),
    )


async def test_after_a_push_of_unknown_outcome_the_state_before_it_is_pushed_again(
    session: AsyncSession, account: int
) -> None:
    """Bob's push timed out (the platform may hold Bob now), then the contact went back to Ann, which the
    platform held before: that must be pushed, not settled as held."""
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io", name="Ann")])
    await service.recompute(session, account, ["a@x.io"])
    row = (await _outbox(session, account))["a@x.io"]
    # What a successful push records.
    row.pushed_hash, row.pushed_payload, row.status = _hash("Ann"), _added("Ann"), OutboxStatus.DONE
    await service.apply_contacts(session, account, [_contact(1, 101, "a@x.io", name="Bob")])
    await service.recompute(session, account, ["a@x.io"])
    row = (await _outbox(session, account))["a@x.io"]
    await session.flush()
    await outbox_repo.mark_outcome_unknown(session, [row.id])  # the import of Bob timed out
    await service.apply_contacts(session, account, [_contact(1, 102, "a@x.io", name="Ann")])
    rec = await service.recompute(session, account, ["a@x.io"])
    assert (rec.queued, rec.unchanged) == (1, 0)
    row = (await _outbox(session, account))["a@x.io"]
    assert (row.status, row.payload["fields"]["Name"], row.pushed_hash) == (
        OutboxStatus.PENDING,
        "Ann",
        OUTCOME_UNKNOWN,
    )


async def test_a_rejected_desire_is_not_queued_again_unless_it_changes(
    session: AsyncSession, account: int
) -> None:
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io", name="Ann")])
    await service.recompute(session, account, ["a@x.io"])
    row = (await _outbox(session, account))["a@x.io"]
    row.status, row.reject_code, row.attempts = OutboxStatus.REJECTED, "role_address", 1
    await session.flush()
    rec = await service.recompute(session, account, ["a@x.io"])
    assert (rec.queued, rec.unchanged) == (0, 1)
    assert (await _outbox(session, account))["a@x.io"].status == OutboxStatus.REJECTED
    await service.apply_contacts(session, account, [_contact(1, 101, "a@x.io", name="Bob")])
    assert (await service.recompute(session, account, ["a@x.io"])).queued == 1
    row = (await _outbox(session, account))["a@x.io"]
    assert (row.status, row.reject_code, row.attempts) == (OutboxStatus.PENDING, None, 0)
    assert row.next_attempt_at <= utcnow()


async def test_an_address_never_pushed_is_not_deleted(session: AsyncSession, account: int) -> None:
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io"), _contact(2, 100, "b@x.io")])
    await service.recompute(session, account, ["a@x.io", "b@x.io"])  # both pending, never pushed
    await service.delete_contacts(session, account, [1])
    rec = await service.recompute(session, account, ["a@x.io", "gone@x.io"])
    assert (rec.queued, rec.unchanged) == (0, 2)
    rows = await _outbox(session, account)
    assert set(rows) == {"a@x.io", "b@x.io"}  # nothing created for gone@x.io
    assert rows["a@x.io"].status == OutboxStatus.DONE  # the queued add is dropped: nothing to undo


async def test_an_address_pushed_before_is_deleted_when_its_last_holder_goes(
    session: AsyncSession, account: int
) -> None:
    await service.apply_contacts(session, account, [_contact(1, 100, "a@x.io", name="Ann")])
    await service.recompute(session, account, ["a@x.io"])
    row = (await _outbox(session, account))["a@x.io"]
    row.pushed_hash, row.status = _hash("Ann"), OutboxStatus.DONE
    gone = await service.delete_contacts(session, account, [1])
    rec = await service.recompute(session, account, gone.affected)
    assert rec.queued == 1
    row = (await _outbox(session, account))["a@x.io"]
    assert (row.status, row.payload) == (OutboxStatus.PENDING, {"delete": True})


async def test_live_changes_are_pushed_before_bulk_work(session: AsyncSession, account: int) -> None:
    """A spec change's walk queues its rows as bulk: a live change queued after them is claimed first."""
    contacts = [_contact(i, 100, f"b{i}@x.io") for i in range(1, 6)]
    await service.apply_contacts(session, account, contacts)
    await service.recompute(session, account, [f"b{i}@x.io" for i in range(1, 6)], bulk=True)
    await service.apply_contacts(
        session, account, [_contact(9, 100, "live@x.io"), _contact(3, 101, "b3@x.io")]
    )
    await service.recompute(session, account, ["live@x.io", "b3@x.io"])
    claimed = [(row.email, row.bulk) for row in await outbox_repo.claim_due(session, account, 4)]
    # Live first (oldest first among them: b3's row is older than live@'s), then the oldest bulk rows; each
    # says which it is (a batch of bulk rows alone waits behind live callers for the platform's budget).
    assert claimed == [("b3@x.io", False), ("live@x.io", False), ("b1@x.io", True), ("b2@x.io", True)]
    rows = await _outbox(session, account)
    assert [e for e, r in sorted(rows.items()) if r.bulk] == ["b1@x.io", "b2@x.io", "b4@x.io", "b5@x.io"]
