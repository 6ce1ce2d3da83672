"""Two-way fields: a value changed in the email platform, for a spec rule of direction ``to_kommo`` or ``both``,
flows back into the CRM contact, and each side's echo of the other's write is recognised and dropped.

A change is (address, platform field F, value V, time t_u): the hook's event time, or for a change found by
the export reconcile (``two_way_sync``) the moment the export started. The rule, per change:

1. No rule of direction ``to_kommo``/``both`` targets F, or no live contact holds the address → ignored
   (a missing owner is logged).
2. Echo: V is what the platform holds of F per our records (what we last pushed, ``outbox.pushed_payload``;
   for a field the platform owns, what it last told us, ``outbox.platform_values``; compared as values of
   F's type, so ``12.50`` is ``12.5``) → our own write coming back, or a change told twice: ignored.
   Otherwise we record that the platform holds V.
3. A ``both`` rule's conflict: the later change wins; a tie goes to the CRM. Judged per field: the CRM's
   change time is the version time (Kommo's ``updated_at``, whole seconds) of the version that last changed
   the rule's source in our copy (``app.sync.field_times``), so an edit of another field of the contact in
   the CRM does not beat the platform's change; a platform change within the same second as the source's
   last CRM change loses. A ``to_kommo`` rule's field belongs to the platform: the CRM's edits of it are
   never pushed (``CompiledSpec.owned``), so there is no conflict to judge and the platform always wins,
   unless its change is older than the one we hold (``Outcome.STALE``: a late hook, or an export taken
   before a hook we applied).
   - CRM wins: the address is re-derived, so the difference (the CRM's value) is pushed back to the platform.
   - Platform wins: we write V into our copy of the contact (every address it owns derives V at once) and
     queue a CRM write of V into the rule's source (``crm_write``, written by ``crm_writes``). The CRM's
     webhook for that write brings V back: it derives what the platform holds, so nothing is pushed. When
     the contact already holds V, nothing is written.
   - V has no value of the source's CRM type (``app.sync.reverse``): the write is recorded failed with the
     reason, and the address is re-derived, which pushes the CRM's value back (for a field the platform
     owns nothing is pushed: the two sides differ until the platform's next change).
Before writing, ``crm_writes`` reads the contact live again: for a ``both`` rule, when its version is at or
after t_u and the source's live value is no longer the one the platform's change won over (``crm_write.crm_before``), a CRM
change of that field was on its way while the rule was applied and wins after all; a write the CRM refuses
fails with its reason. In both cases the live contact replaces our copy and the CRM's value is pushed back to
the platform. A write that went ahead past a CRM version we had not seen yet (an edit of another field)
takes that version into our copy in the same transaction, with the values just written and the pending
platform values our copy still held kept, so its late webhook changes nothing (a written value such a webhook
replaced while the write was in flight is put back the same way). A write also goes ahead when the live value is the one an
earlier platform change of the field (not yet written) won over, as long as each later change won over
the value the one before it put in our copy (an unbroken chain: no CRM edit between them).

Callers hold ``app.db.locks.account_lock`` and own the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectors.base import EspHookEvent
from app.db.base import utcnow
from app.db.states import CrmWriteState
from app.sync import contacts_repo, crm_writes_repo, field_times, outbox_repo, reverse, service, spec_repo
from app.sync.crm_writes_repo import NewWrite, source_key
from app.sync.held import held_state, held_value, in_push_record
from app.sync.outbox_repo import HeldRow
from app.sync.spec import Direction, FieldRule, StoredSpec

log = structlog.get_logger(__name__)

_BACK = (Direction.TO_KOMMO, Direction.BOTH)


class Outcome(StrEnum):
    NO_RULE = "no_rule"
    NO_OWNER = "no_owner"
    ECHO = "echo"
    CRM_WINS = "crm_wins"
    PLATFORM_WINS = "platform_wins"  # a CRM write queued
    ALREADY_HELD = "already_held"  # the platform won, and the contact held the value already
    UNCONVERTIBLE = "unconvertible"
    STALE = "stale"  # a platform-owned field reported older than what the platform last told us


@dataclass(frozen=True, slots=True)
class DataChange:
    email: str  # normalised
    target: str  # the platform's field name
    value: str
    at: datetime  # when the platform's value was set (UTC)


def back_rules(spec: StoredSpec) -> dict[str, FieldRule]:
    """The spec's rules that carry values back to the CRM, by target (one source each: ``spec_check``)."""
    return {r.target: r for r in spec.fields if r.direction in _BACK and len(r.sources) == 1}


async def apply_change(
    session: AsyncSession, account_id: int, change: DataChange, spec: StoredSpec | None = None
) -> Outcome:
    """Apply the rule of the module docstring to one change."""
    if spec is None:
        _, spec = await spec_repo.current_spec(session, account_id)
    rule = back_rules(spec).get(change.target)
    if rule is None:
        return Outcome.NO_RULE
    owner = (await contacts_repo.live_owners(session, account_id, [change.email])).get(change.email)
    if owner is None:
        log.info("two_way.no_owner", account_id=account_id, target=change.target)
        return Outcome.NO_OWNER
    row = (await outbox_repo.lock_outbox(session, account_id, [change.email])).get(change.email)
    owned = rule.direction is Direction.TO_KOMMO
    held = held_state(row.pushed_payload, row.platform_values) if row is not None else None
    if held is None and owned and row is not None:
        held = held_state(
            {"fields": {}}, row.platform_values
        )  # nothing pushed yet: what it told us of its own
    pushed = held_value(held, change.target) or ""
    if reverse.same(rule.target_type, pushed, change.value):
        return Outcome.ECHO
    at = int(change.at.timestamp())
    if owned and at < _told_at(row, change.target):
        # An older report than the one we hold (a late hook, or an export taken before a hook we applied).
        _log(account_id, change, Outcome.STALE, 0)
        return Outcome.STALE
    if row is not None:
        await crm_writes_repo.record_held_value(session, row, change.target, change.value, owned=owned, at=at)
    ref = rule.sources[0]
    key = source_key(ref)
    crm_at = field_times.changed_at(
        await contacts_repo.field_times_of(session, account_id, owner.kommo_id), key, owner.updated_at
    )
    if not owned and at <= crm_at:
        await service.recompute(session, account_id, [change.email])
        _log(account_id, change, Outcome.CRM_WINS, crm_at)
        return Outcome.CRM_WINS
    derive = await service.derivation(session, account_id, spec)
    read = derive.compiled.reader(change.target)
    current = read(owner.view()) if read is not None else ""
    emails = [change.email, *owner.emails]
    if reverse.same(rule.target_type, current, change.value):
        await service.recompute(session, account_id, emails)
        return Outcome.ALREADY_HELD
    write = NewWrite(
        owner.kommo_id,
        change.email,
        key,
        ref.type,
        change.target,
        change.value,
        change.at,
        crm_before=field_times.source_text(key, owner.name, owner.data),
    )
    try:
        _, text = reverse.crm_value(ref, change.value)
    except reverse.Unconvertible as exc:
        failed = replace(write, state=CrmWriteState.FAILED, last_error=str(exc)[:300])
        await crm_writes_repo.add_write(session, account_id, failed, at=utcnow())
        await service.recompute(session, account_id, [change.email])
        _log(account_id, change, Outcome.UNCONVERTIBLE, crm_at)
        return Outcome.UNCONVERTIBLE
    await crm_writes_repo.add_write(session, account_id, write, at=utcnow())
    await crm_writes_repo.set_contact_value(
        session, account_id, owner.kommo_id, ref, text, changed_at=int(change.at.timestamp())
    )
    await service.recompute(session, account_id, emails)
    _log(account_id, change, Outcome.PLATFORM_WINS, crm_at)
    return Outcome.PLATFORM_WINS


async def on_hook_event(
    session: AsyncSession, account_id: int, item: EspHookEvent, received_at: datetime
) -> list[Outcome]:
    """A hook event's data change (if it is one): each changed field through ``apply_change``."""
    values: Mapping[str, str] = item.field_values
    if not values or item.email is None:
        return []
    _, spec = await spec_repo.current_spec(session, account_id)
    when = item.time or received_at
    return [
        await apply_change(session, account_id, DataChange(item.email, target, value, when), spec)
        for target, value in values.items()
    ]


def _told_at(row: HeldRow | None, target: str) -> int:
    """When the platform got the value we hold of an owned target: when it reported it, or for one the push
    record holds (the later), when that push was accepted; 0 when unknown."""
    if row is None:
        return 0
    pushed = row.pushed_payload or {}
    if in_push_record(pushed, target):
        return row.pushed_at
    entry = (row.platform_values or {}).get(target)
    return int(entry.get("at") or 0) if isinstance(entry, dict) else 0


def _log(account_id: int, change: DataChange, outcome: Outcome, kommo_at: int) -> None:
    log.info(
        "two_way.change",
        account_id=account_id,
        target=change.target,
        outcome=outcome.value,
        platform_at=int(change.at.timestamp()),
        crm_at=kommo_at,
    )
