"""The mirror's core: apply contact versions, then recompute the desired state of every touched address.

Rules:
- A webhook's contact version applies only if it is newer than the one we hold (Kommo ``updated_at``): out-
  of-order and duplicate deliveries converge to the latest state.
- What is read live from Kommo's REST API (full sync, reconcile, verification) is the truth as of the read:
  it replaces what we stored before it, whatever that version's timestamp (a forged one included).
- An address's owner is the most recently updated live contact holding it; when no live contact holds it any
  more, it is deleted from the email platform. An unsubscribed address is never pushed again.
- Unisender's state per address is remembered (``outbox.pushed_hash``): a change that leaves it unchanged sends
  nothing.
Callers hold ``repository.account_lock`` for the account and own the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.connectors.base import CrmContact
from app.db.base import utcnow
from app.db.models import Contact
from app.sync import repository as repo
from app.sync.mapping import DesiredAddress, contact_emails, payload_hash


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
    a contact we hold as deleted. A row written after ``read_at`` (a webhook applied while the page was on its
    way) may hold a later change, so there only a newer version applies. Identical rows are never rewritten:
    a full sync over an unchanged account only marks them seen.
    """
    latest: dict[int, CrmContact] = {}
    for c in contacts:
        cur = latest.get(c.id)
        if cur is None or c.updated_at >= cur.updated_at:
            latest[c.id] = c
    result = ApplyResult()
    if not latest:
        return result
    existing = await repo.contacts_by_ids(session, account_id, latest)
    held = await repo.addresses_of(session, account_id, latest)
    now = utcnow()
    rows = []
    address_changes: dict[int, tuple[set[str], set[str]]] = {}
    for cid, c in latest.items():
        old = existing.get(cid)
        new_emails = set(contact_emails(c.emails))
        if old is not None and not _replaces(old, c, new_emails, read_at):
            continue
        old_emails = held.get(cid, set())
        if new_emails != old_emails:
            address_changes[cid] = (old_emails - new_emails, new_emails - old_emails)
        result.affected |= old_emails | new_emails
        result.changed += 1
        rows.append(
            {
                "account_id": account_id,
                "kommo_id": cid,
                "name": c.name,
                "emails": sorted(new_emails),
                "tags": list(c.tags),
                "kommo_updated_at": c.updated_at,
                "deleted_at": None,
                "seen_run_id": run_id,
                "updated_at": now,
            }
        )
    await repo.upsert_contacts(session, rows)
    await repo.replace_addresses(session, account_id, address_changes)
    if run_id is not None:
        # Versions we skipped as not newer were still seen live by this run.
        applied = {r["kommo_id"] for r in rows}
        skipped = [cid for cid in latest if cid not in applied]
        await repo.mark_seen(session, account_id, skipped, run_id)
    return result


def _replaces(old: Contact, new: CrmContact, emails: set[str], read_at: datetime | None) -> bool:
    """Whether ``new`` replaces the stored row ``old`` (see ``apply_contacts``)."""
    if read_at is not None and old.updated_at < read_at:
        same = (
            old.deleted_at is None
            and old.kommo_updated_at == new.updated_at
            and old.name == new.name
            and list(old.emails) == sorted(emails)
            and list(old.tags) == list(new.tags)
        )
        return not same
    newer = new.updated_at > old.kommo_updated_at
    revived = read_at is not None and old.deleted_at is not None and new.updated_at >= old.kommo_updated_at
    return newer or revived


async def delete_contacts(
    session: AsyncSession, account_id: int, ids: Iterable[int], *, deleted_at: datetime | None = None
) -> ApplyResult:
    """Mark contacts deleted (confirmed gone from the CRM) and release their addresses."""
    result = ApplyResult()
    id_set = set(ids)
    if not id_set:
        return result
    existing = await repo.contacts_by_ids(session, account_id, id_set)
    held = await repo.addresses_of(session, account_id, id_set)
    when = deleted_at or utcnow()
    changes: dict[int, tuple[set[str], set[str]]] = {}
    for cid in id_set:
        row = existing.get(cid)
        if row is not None and row.deleted_at is None:
            row.deleted_at = when
            result.changed += 1
        if held.get(cid):
            changes[cid] = (held[cid], set())
            result.affected |= held[cid]
    await repo.replace_addresses(session, account_id, changes)
    await session.flush()
    return result


@dataclass
class RecomputeResult:
    queued: int = 0  # addresses given a new pending desire
    unchanged: int = 0  # desire equals what Unisender holds or already queued
    suppressed: int = 0  # unsubscribed addresses left alone


async def recompute(session: AsyncSession, account_id: int, emails: Iterable[str]) -> RecomputeResult:
    """Write the desired state of ``emails`` into the outbox (coalesced: one row per address)."""
    email_list = sorted(set(emails))
    result = RecomputeResult()
    if not email_list:
        return result
    owners = await repo.live_owners(session, account_id, email_list)
    consent = await repo.consent_rows(session, account_id, email_list)
    esp = await repo.get_esp(session, account_id)
    list_id = esp.list_id if esp is not None else None
    await repo.upsert_owners(
        session, account_id, {e: (owners[e].kommo_id if e in owners else None) for e in email_list}
    )
    rows = await repo.lock_outbox(session, account_id, email_list)
    now = utcnow()
    new_rows: list[tuple[str, dict[str, object], str]] = []
    for email in email_list:
        row = rows.get(email)
        if email in consent and consent[email].consent == "unsubscribed":
            if row is not None and row.status == "pending":
                row.status, row.last_error, row.updated_at = "cancelled", "unsubscribed", now
            result.suppressed += 1
            continue
        owner = owners.get(email)
        desired = DesiredAddress(email=email, delete=owner is None, name=owner.name if owner else "")
        payload = desired.payload()
        h = payload_hash(payload, list_id)
        if row is None:
            if desired.delete:
                result.unchanged += 1  # never pushed: nothing to delete
            else:
                new_rows.append((email, payload, h))
                result.queued += 1
            continue
        if h == row.pushed_hash or (desired.delete and row.pushed_hash is None):
            # Unisender already holds this state (or never held the address): drop any queued change.
            if row.status == "pending":
                row.status, row.payload, row.payload_hash = "done", payload, h
                row.last_error, row.updated_at = None, now
            result.unchanged += 1
            continue
        if h == row.payload_hash and row.status in ("pending", "rejected"):
            result.unchanged += 1  # already queued, or refused for a reason resending cannot fix
            continue
        row.payload, row.payload_hash, row.status = payload, h, "pending"
        row.attempts, row.next_attempt_at, row.last_error, row.reject_code = 0, now, None, None
        row.updated_at = now
        result.queued += 1
    await repo.add_outbox(session, account_id, new_rows)
    await session.flush()
    return result
