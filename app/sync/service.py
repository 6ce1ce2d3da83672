"""The mirror's core: apply contact versions, then recompute the desired state of every touched address.

Rules:
- A webhook's contact version applies only if it is newer than the one we hold (Kommo ``updated_at``): out-
  of-order and duplicate deliveries converge to the latest state.
- What is read live from Kommo's REST API (full sync, reconcile, verification) is the truth as of the read:
  it replaces what we stored before it, whatever that version's timestamp (a forged one included).
- An address's owner is the most recently updated live contact holding it; when no live contact holds it any
  more, it is deleted from the email platform. An unsubscribed address is never pushed again, and an address
  unsubscribed from one list is never put back in it.
- What the platform should hold for an address is derived from its owner and the account's sync spec
  (``app.sync.mapping.desired``): mapped fields, phone, list memberships.
- Unisender's state per address is remembered (``outbox.pushed_hash`` and ``pushed_payload``): a change that
  leaves it unchanged (an edit of an unmapped field, say) sends nothing.
Callers hold ``app.db.locks.account_lock`` for the account and own the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.connectors.base import CrmContact
from app.db.base import utcnow
from app.db.locks import account_lock, tagging_lock
from app.db.models import Contact
from app.db.session import after_commit
from app.db.states import OutboxStatus
from app.queue import enqueue
from app.sync import consent_repo, contacts_repo, field_times, outbox_repo, spec_repo
from app.sync.contacts_repo import AddressChange, ContactRow, Owner
from app.sync.held import held_state, platform_record
from app.sync.mapping import (
    CompiledSpec,
    already_held,
    contact_data,
    contact_emails,
    keep_phone,
    payload_hash,
)
from app.sync.spec import PHONE_TARGET, SourceKind, StoredSpec


@dataclass
class ApplyResult:
    changed: int = 0  # contact versions applied
    affected: set[str] = field(default_factory=set)  # addresses whose desired state may have changed


async def apply_contacts(
    session: AsyncSession,
    account_id: int,
    contacts: Iterable[CrmContact],
    *,
    read_at: datetime | None = None,
    run_id: str | None = None,
) -> ApplyResult:
    """Upsert contact versions.

    Without ``read_at`` (webhook versions) only strictly newer versions of live contacts apply. With it, the
    versions were read live from the CRM at ``read_at`` (full sync, reconcile, verification) and are the
    truth as of then: they replace whatever we stored before that moment, whatever its timestamp, and revive
    a contact we held as deleted before it. A row written after ``read_at`` (a webhook applied, or a deletion
    confirmed, while the page was on its way) may hold a later change, so there only a newer version applies.
    Identical rows are never rewritten:
    a full sync over an unchanged account only marks them seen.
    """
    latest: dict[int, CrmContact] = {}
    every: dict[
        int, list[CrmContact]
    ] = {}  # each contact's versions in this call (several: a burst of edits)
    for c in contacts:
        every.setdefault(c.id, []).append(c)
        cur = latest.get(c.id)
        if cur is None or c.updated_at >= cur.updated_at:
            latest[c.id] = c
    result = ApplyResult()
    if not latest:
        return result
    existing = await contacts_repo.contacts_by_ids(session, account_id, latest)
    held = await contacts_repo.addresses_of(session, account_id, latest)
    rows: list[ContactRow] = []
    address_changes: dict[int, AddressChange] = {}
    for cid, c in latest.items():
        old = existing.get(cid)
        new_emails = set(contact_emails(c.emails))
        if old is not None and not _replaces(old, c, read_at):
            continue
        old_emails = held.get(cid, set())
        if new_emails != old_emails:
            address_changes[cid] = AddressChange(old_emails - new_emails, new_emails - old_emails)
        result.affected |= old_emails | new_emails
        result.changed += 1
        data = contact_data(c, old.data if old is not None else None)
        times = _stamped(old, c, data, every[cid] if read_at is None else [c])
        rows.append(
            ContactRow(cid, c.name, sorted(new_emails), list(c.tags), c.updated_at, run_id, data, times)
        )
    await contacts_repo.upsert_contacts(session, account_id, rows, now=utcnow())
    await contacts_repo.replace_addresses(session, account_id, address_changes)
    added = sorted({e for change in address_changes.values() for e in change.added})
    stopped = await consent_repo.stopped_among(session, account_id, added) if added else []
    if stopped:
        # A new holder of an address that takes no more mail (or left a list) is tagged too: its write-back is
        # due again. Best under the tagging lock (a tag round that read the holders before this change would
        # mark the address written back after it, without the new holder), but never waiting for it here: a
        # round holds it across Kommo calls, and the account's mirror lock is held meanwhile.
        await tagging_lock(session, account_id, wait=False)
        await consent_repo.untag(session, account_id, stopped)
    if run_id is not None:
        # Versions we skipped as not newer were still seen live by this run.
        applied = {row.kommo_id for row in rows}
        skipped = [cid for cid in latest if cid not in applied]
        await contacts_repo.mark_seen(session, account_id, skipped, run_id)
    return result


def _stamped(
    old: Contact | None, applied: CrmContact, data: dict[str, Any], versions: list[CrmContact]
) -> dict[str, int]:
    """The per-field change times after applying ``applied`` (its ``data``): each of this call's versions newer
    than the row we held stamps what it changed, oldest first, so an edit undone within one burst still
    counts as a change (``app.sync.field_times``)."""
    if old is None and len(versions) == 1:
        return field_times.first(applied.updated_at)  # a full sync's first pass: nothing to compare
    steps = sorted((v for v in versions if v.updated_at <= applied.updated_at), key=lambda v: v.updated_at)
    if old is None:
        first_version = steps[0]
        held_data: dict[str, Any] | None = contact_data(first_version, None)
        times = field_times.first(first_version.updated_at)
        before = field_times.source_values(first_version.name, held_data)
        held_version = first_version.updated_at
        steps = steps[1:]
    else:
        held_data, times = old.data, old.field_times or {}
        before = field_times.source_values(old.name, old.data)
        held_version = old.kommo_updated_at
        steps = [v for v in steps if v.updated_at > held_version] or [applied]
    for version in steps:
        step_data = data if version is applied else contact_data(version, held_data)
        after = field_times.source_values(version.name, step_data)
        times = field_times.stamp(times, before, after, version.updated_at, held_version)
        before, held_version, held_data = after, version.updated_at, step_data
    return times


def holds(old: Contact, new: CrmContact) -> bool:
    """Whether the stored row ``old`` is a live contact holding what ``new`` says (its version stamp aside)."""
    return (
        old.deleted_at is None
        and old.name == new.name
        and list(old.emails) == sorted(contact_emails(new.emails))
        and list(old.tags) == list(new.tags)
        and (old.data or {}) == contact_data(new, old.data)
    )


def _replaces(old: Contact, new: CrmContact, read_at: datetime | None) -> bool:
    """Whether ``new`` replaces the stored row ``old`` (see ``apply_contacts``)."""
    if read_at is not None and old.deleted_at is not None:
        # Deleted as of the read that found it gone (``deleted_at``): a later read of the contact is the truth,
        # an earlier one (a page fetched ahead of its commit) is not, whichever of the two commits first.
        return read_at > old.deleted_at
    if read_at is not None and old.updated_at < read_at:
        return not (old.kommo_updated_at == new.updated_at and holds(old, new))
    # Written after the read (or a webhook version): only a newer version applies.
    return new.updated_at > old.kommo_updated_at


async def delete_contacts(
    session: AsyncSession,
    account_id: int,
    ids: Iterable[int],
    *,
    deleted_at: datetime | None = None,
    read_at: datetime | None = None,
) -> ApplyResult:
    """Mark contacts deleted (confirmed gone from the CRM) and release their addresses. With ``read_at`` (when
    the CRM was asked), that is the deletion's time (what a later read is compared with), and a row written
    since is left alone: a restore applied after that read is newer."""
    result = ApplyResult()
    id_set = set(ids)
    if not id_set:
        return result
    existing = await contacts_repo.contacts_by_ids(session, account_id, id_set)
    held = await contacts_repo.addresses_of(session, account_id, id_set)
    when = deleted_at or read_at or utcnow()
    changes: dict[int, AddressChange] = {}
    for cid in id_set:
        row = existing.get(cid)
        if row is not None and read_at is not None and row.updated_at >= read_at:
            continue
        if row is not None and row.deleted_at is None:
            row.deleted_at = when
            result.changed += 1
        if held.get(cid):
            changes[cid] = AddressChange(held[cid], set())
            result.affected |= held[cid]
    await contacts_repo.replace_addresses(session, account_id, changes)
    await session.flush()
    return result


# Rows a desire equal to their own payload leaves as they are: queued already, refused by the platform (sending
# the same again cannot help), or discarded by an operator (app.deadletters). A different desire requeues them.
_KEPT = (OutboxStatus.PENDING, OutboxStatus.REJECTED, OutboxStatus.DISCARDED)


@dataclass
class RecomputeResult:
    queued: int = 0  # addresses given a new pending desire
    unchanged: int = 0  # desire equals what Unisender holds or already queued
    differs: int = 0  # desire differs from what Unisender holds (newly queued or queued already)
    suppressed: int = 0  # unsubscribed addresses left alone


@dataclass(frozen=True, slots=True)
class Derivation:
    """What deriving an account's addresses needs besides their owners: read once per batch."""

    base_list_id: int | None
    users: dict[int, str]
    compiled: CompiledSpec

    def payload(
        self, email: str, owner: Owner | None, unsubscribed_lists: frozenset[int], held: dict[str, Any] | None
    ) -> dict[str, Any]:
        view = owner.view() if owner is not None else None
        wanted = self.compiled.desired(view, email=email, unsubscribed_lists=unsubscribed_lists)
        if PHONE_TARGET in self.compiled.owned:  # a phone the platform owns is never sent, not even kept
            return wanted
        return keep_phone(wanted, held)


async def derivation(session: AsyncSession, account_id: int, spec: StoredSpec | None = None) -> Derivation:
    """The account's spec in force (or ``spec``, a candidate), base list and user names."""
    if spec is None:
        _, spec = await spec_repo.current_spec(session, account_id)
    esp = await accounts_repo.get_esp_account(session, account_id)
    users = await spec_repo.user_names(session, account_id) if spec.uses(SourceKind.RESPONSIBLE_USER) else {}
    base_list_id = esp.list_id if esp is not None else None
    compiled = CompiledSpec.of(spec, base_list_id=base_list_id, users=users)
    return Derivation(base_list_id, users, compiled)


async def recompute(
    session: AsyncSession,
    account_id: int,
    emails: Iterable[str],
    *,
    bulk: bool = False,
) -> RecomputeResult:
    """Write the desired state of ``emails`` into the outbox (coalesced: one row per address). ``bulk``
    (a spec change's walk) queues them behind live changes."""
    email_list = sorted(set(emails))
    result = RecomputeResult()
    if not email_list:
        return result
    owners = await contacts_repo.live_owners(session, account_id, email_list)
    unsubscribed = await consent_repo.unsubscribed(session, account_id, email_list)
    per_list = await consent_repo.list_unsubscribes(session, account_id, email_list)
    derive = await derivation(session, account_id)
    if not bulk:
        # A walk re-derives addresses whose owners it did not change (every change of owner went through
        # here already, under the same lock).
        await consent_repo.upsert_owners(
            session, account_id, {e: (owners[e].kommo_id if e in owners else None) for e in email_list}
        )
    rows = await outbox_repo.lock_outbox(session, account_id, email_list)
    helds = await _held_states(session, rows, derive.compiled.owned)
    now = utcnow()
    fresh: list[outbox_repo.NewRow] = []
    requeued: list[outbox_repo.Requeue] = []
    settled: list[outbox_repo.Requeue] = []
    cancelled: list[str] = []
    for email in email_list:
        row = rows.get(email)
        if email in unsubscribed:
            if row is not None and row.status == OutboxStatus.PENDING:
                cancelled.append(email)
            result.suppressed += 1
            continue
        owner = owners.get(email)
        held = helds.get(email)
        payload = derive.payload(email, owner, per_list.get(email, frozenset()), held)
        h = payload_hash(payload)
        if row is None:
            if owner is None:
                result.unchanged += 1  # never pushed: nothing to delete
            else:
                fresh.append(outbox_repo.NewRow(email, payload, h))
                result.queued += 1
                result.differs += 1
            continue
        if already_held(payload, row.pushed_hash, held, owned=owner is not None):
            # Unisender already holds this state (or never held the address): drop any queued change.
            if row.status == OutboxStatus.PENDING:
                settled.append(outbox_repo.Requeue(row.id, payload, h))
            result.unchanged += 1
            continue
        result.differs += 1
        if h == row.payload_hash and row.status in _KEPT:
            result.unchanged += 1  # already queued, refused for a reason resending cannot fix, or given up on
            continue
        requeued.append(outbox_repo.Requeue(row.id, payload, h))
        result.queued += 1
    await outbox_repo.cancel_outbox(session, account_id, cancelled, "unsubscribed")
    await outbox_repo.settle(session, settled, now)
    await outbox_repo.requeue(session, requeued, now, bulk=bulk)
    await outbox_repo.add_outbox(session, account_id, fresh, bulk=bulk)
    return result


async def _held_states(
    session: AsyncSession, rows: Mapping[str, outbox_repo.HeldRow], owned: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per address with a push record, what the platform holds (``held_state``), its ``platform_values``
    first brought up to the spec in force (``platform_record``; changed ones written back)."""
    out: dict[str, dict[str, Any]] = {}
    changed: list[tuple[int, dict[str, Any] | None]] = []
    for email, row in rows.items():
        values = row.platform_values
        if owned or values:
            values = platform_record(row.pushed_payload, row.platform_values, owned, row.pushed_at)
            if values != row.platform_values:
                changed.append((row.id, values))
        held = held_state(row.pushed_payload, values)
        if held is not None:
            out[email] = held
    await outbox_repo.set_platform_values(session, changed)
    return out


@dataclass(frozen=True, slots=True)
class PushResult:
    queued: list[str]  # normalised addresses given a pending desire
    skipped_unsubscribed: list[str]  # unsubscribed addresses not added back


async def push_addresses(
    session: AsyncSession, queue: ArqRedis, account_id: int, emails: Iterable[str], *, delete: bool
) -> PushResult:
    """An operator's manual push: queue ``emails`` (normalised addresses) as added, with their owner's name,
    or deleted, whatever the platform holds already, due now; a flush job pushes them once this commits.
    Unsubscribed addresses are never added back."""
    email_list = sorted(set(emails))
    await account_lock(session, account_id)
    unsubscribed = set() if delete else await consent_repo.unsubscribed(session, account_id, email_list)
    skipped = [e for e in email_list if e in unsubscribed]
    wanted = [e for e in email_list if e not in unsubscribed]
    owners = await contacts_repo.live_owners(session, account_id, wanted)
    per_list = await consent_repo.list_unsubscribes(session, account_id, wanted)
    derive = await derivation(session, account_id)
    rows = await outbox_repo.lock_outbox(session, account_id, wanted)
    helds = await _held_states(session, rows, derive.compiled.owned)
    fresh: list[outbox_repo.NewRow] = []
    requeued: list[outbox_repo.Requeue] = []
    for email in wanted:
        row = rows.get(email)
        if delete:
            payload: dict[str, Any] = {"delete": True}
        else:
            # An address no live contact holds is still added: with empty fields, in the lists for everyone.
            owner = owners.get(email) or Owner(0, "", 0, [], {}, [])
            payload = derive.payload(email, owner, per_list.get(email, frozenset()), helds.get(email))
        if row is None:
            fresh.append(outbox_repo.NewRow(email, payload, payload_hash(payload)))
        else:
            requeued.append(outbox_repo.Requeue(row.id, payload, payload_hash(payload)))
    await outbox_repo.requeue(session, requeued, utcnow(), bulk=False)
    await outbox_repo.add_outbox(session, account_id, fresh)
    after_commit(session, lambda: enqueue.flush_outbox(queue, account_id, delay=0))
    return PushResult(queued=wanted, skipped_unsubscribed=skipped)
