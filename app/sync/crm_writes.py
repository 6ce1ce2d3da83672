"""Writes into the CRM the values two-way fields took in the email platform (``crm_write`` rows queued by
``app.sync.two_way``): per contact the latest value of each field wins (the older ones are superseded), one
batch of contact patches per round, paced by the account's CRM budget (the client's limiter).

A value the CRM refuses (a deleted contact, an option it does not have) is failed with the reason and never
retried; the contact is re-read live so that our copy, which took the value already, holds the CRM's again
and the address is re-derived: the CRM's value goes back to the platform (not for a field the platform owns,
a ``to_kommo`` rule's, which is never pushed: there the two sides differ until the platform's next change). Any other error leaves the rows
pending for the job's retry (writing a value twice is harmless).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectors.base import CrmClient, CrmContact, CrmFieldWrite, CrmValue, FieldsWritten
from app.connectors.errors import RequestError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import account_lock, xact_lock
from app.db.models import CrmWrite
from app.db.states import CrmWriteState
from app.sync import (
    contacts_repo,
    crm_writes_repo,
    field_times,
    providers,
    reverse,
    service,
    spec_repo,
    two_way,
)
from app.sync.isolation import describe
from app.sync.mapping import contact_data
from app.sync.spec import Direction, SourceKind, SourceRef

log = structlog.get_logger(__name__)

ROUND_ROWS = 1000  # rows per round: at most this many contacts per batch of PATCH calls
MAX_ROUNDS = 5  # per job; a longer backlog goes on in a fresh job


@dataclass
class WriteResult:
    written: int = 0  # contacts written
    failed: int = 0  # values failed (no CRM form, or refused)
    busy: bool = False  # another job writes this account's values
    more: bool = False  # stopped with rows left
    rederived: bool = False  # contacts whose CRM side won after all: the outbox may have work
    refused: dict[int, set[str]] = field(default_factory=dict)  # this round's refused contacts → addresses


@dataclass
class Plan:
    """One round's rows turned into one write per contact."""

    writes: list[CrmFieldWrite] = field(default_factory=list)
    ids: dict[str, list[int]] = field(default_factory=dict)  # write key → its rows
    emails: dict[str, set[str]] = field(default_factory=dict)  # write key → the addresses they came from
    superseded: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # row → why it has no CRM value
    # Rows the CRM's side won after all (its contact changed since, or is gone): contact → their addresses.
    stale: dict[int, set[str]] = field(default_factory=dict)
    stale_ids: dict[int, str] = field(default_factory=dict)  # row → why


def source_ref(source: str, field_type: str) -> SourceRef:
    """The ``SourceRef`` a ``crm_write.source`` names (its display name is not needed to write it)."""
    kind, _, field_id = source.partition(":")
    return SourceRef(
        kind=SourceKind(kind), field_id=int(field_id) if field_id else None, type=field_type, name=""
    )


def plan_writes(
    rows: Sequence[CrmWrite],
    versions: Mapping[int, int] | None = None,
    live: Mapping[tuple[int, str], str] | None = None,
    owned: frozenset[str] = frozenset(),
) -> Plan:
    """Per contact and source the latest value (by the platform's time, then by arrival) is written, unless
    ``versions`` (the contacts' CRM version times as read live just now) says the CRM changed the contact at
    or after the platform's change, or no longer has it: then the CRM's side wins after all (the conflict
    rule of ``app.sync.two_way``, checked again against the live version: a CRM change may have been on its
    way while the platform's was decided). A contact changed since is still written when ``live`` (the live
    value of each (contact, source), ``app.sync.field_times.source_text``) shows the source itself unchanged:
    the value the platform's change won over (``crm_before``) is still the CRM's. Changes of a target in
    ``owned`` (a ``to_kommo`` rule's: the platform owns the field) are written whatever the CRM's version,
    unless the contact is gone."""
    plan = Plan()
    latest: dict[tuple[int, str], CrmWrite] = {}
    for row in rows:
        pair = (row.kommo_id, row.source)
        cur = latest.get(pair)
        if cur is None or (row.unisender_at, row.id) >= (cur.unisender_at, cur.id):
            if cur is not None:
                plan.superseded.append(cur.id)
            latest[pair] = row
        else:
            plan.superseded.append(row.id)
    befores = _crm_befores(rows)
    per_contact: dict[int, list[tuple[CrmWrite, CrmValue]]] = {}
    for row in latest.values():
        if versions is not None:
            version = versions.get(row.kommo_id)
            at = int(row.unisender_at.timestamp())
            pair = (row.kommo_id, row.source)
            held = row.target in owned or (live or {}).get(pair) in befores.get(pair, set())
            if version is None or (version >= at and not held):
                why = (
                    "the CRM contact is gone"
                    if version is None
                    else f"changed in the CRM at {version} >= {at}"
                )
                plan.stale_ids[row.id] = why
                plan.stale.setdefault(row.kommo_id, set()).add(row.email)
                continue
        try:
            value, _ = reverse.crm_value(source_ref(row.source, row.field_type), row.value)
        except (reverse.Unconvertible, ValueError) as exc:
            plan.failed[row.id] = str(exc)[:300]
            continue
        per_contact.setdefault(row.kommo_id, []).append((row, value))
    for kommo_id, items in sorted(per_contact.items()):
        key = f"c{kommo_id}"
        attributes = tuple((r.source, str(v)) for r, v in items if not r.source.startswith("custom_field:"))
        fields = tuple(
            (int(r.source.partition(":")[2]), v) for r, v in items if r.source.startswith("custom_field:")
        )
        plan.writes.append(CrmFieldWrite(kommo_id, key, attributes, fields))
        plan.ids[key] = [r.id for r, _ in items]
        plan.emails[key] = {r.email for r, _ in items}
    return plan


def _crm_befores(rows: Sequence[CrmWrite]) -> dict[tuple[int, str], set[str]]:
    """Per (contact, source), the CRM values a write of its latest row may find live: the value its platform
    change won over, and, down an unbroken chain of earlier platform changes of the field not yet written
    (each later one won over the value the earlier one put in our copy), the value the earliest won over."""
    chains: dict[tuple[int, str], list[CrmWrite]] = {}
    for row in rows:
        chains.setdefault((row.kommo_id, row.source), []).append(row)
    out: dict[tuple[int, str], set[str]] = {}
    for pair, chain in chains.items():
        chain.sort(key=lambda r: (r.unisender_at, r.id), reverse=True)  # latest first
        accepted: set[str] = set()
        for later, earlier in zip(chain, [*chain[1:], None], strict=True):
            if later.crm_before is None:
                break
            accepted.add(later.crm_before)
            if earlier is None or later.crm_before != _stored_text(earlier):
                break
        out[pair] = accepted
    return out


def _stored_text(row: CrmWrite) -> str | None:
    """The text our copy took for a platform change (``reverse.crm_value``), None when it has none."""
    try:
        return reverse.crm_value(source_ref(row.source, row.field_type), row.value)[1]
    except (reverse.Unconvertible, ValueError):
        return None


async def write_crm_fields(pc: ProcessContext, account_id: int) -> WriteResult:
    """Write the account's pending values, up to ``MAX_ROUNDS`` rounds."""
    result = WriteResult()
    client = await providers.crm_client(pc, account_id)  # before the session: it reads through its own
    for _ in range(MAX_ROUNDS):
        async with pc.db.session_scope() as session:
            # One writer per account: two would each write their own rows' values in any order.
            if not await xact_lock(session, f"crm_write:{account_id}", wait=False):
                result.busy = True
                return result
            rows = await crm_writes_repo.pending_writes(session, account_id, ROUND_ROWS)
            if not rows:
                return result
            read_at = utcnow()
            live = {c.id: c for c in await client.get_contacts(sorted({r.kommo_id for r in rows}))}
            values = {
                (r.kommo_id, r.source): field_times.source_text(r.source, c.name, contact_data(c))
                for r in rows
                if (c := live.get(r.kommo_id)) is not None
            }
            plan = plan_writes(
                rows,
                {cid: c.updated_at for cid, c in live.items()},
                values,
                await _owned(session, account_id),
            )
            written = await _round(session, client, account_id, plan, result)
            # What the CRM's side won after all goes back: our copy took the platform's values already. A
            # contact written in this round is left to the webhook of that write, which carries all of it.
            stale = {c: e for c, e in {**plan.stale, **result.refused}.items() if c not in written}
            if stale:
                await _rederive(session, account_id, [live[c] for c in stale if c in live], read_at, stale)
                result.rederived = True
                result.refused.clear()
            done = [i for w in plan.writes if w.contact_id in written for i in plan.ids[w.key]]
            if await _catch_up(
                session, account_id, {c: live[c] for c in written if c in live}, done, read_at
            ):
                result.rederived = True
        if len(rows) < ROUND_ROWS:
            return result
    result.more = True
    return result


async def _owned(session: AsyncSession, account_id: int) -> frozenset[str]:
    """The targets of the spec's ``to_kommo`` rules (the spec in force now: a rule turned to ``both`` since
    its change was queued is judged as ``both``). By target, not source: one Kommo field may feed a
    ``to_kommo`` target and a ``both`` one."""
    _, spec = await spec_repo.current_spec(session, account_id)
    return frozenset(
        t for t, rule in two_way.back_rules(spec).items() if rule.direction is Direction.TO_KOMMO
    )


async def _round(
    session: AsyncSession, client: CrmClient, account_id: int, plan: Plan, result: WriteResult
) -> set[int]:
    """Write the plan and record each row's outcome; returns the contacts written."""
    now = utcnow()
    await crm_writes_repo.finish(session, plan.superseded, CrmWriteState.SUPERSEDED, now)
    for row_id, reason in plan.failed.items():
        await crm_writes_repo.finish(session, [row_id], CrmWriteState.FAILED, now, reason)
    for row_id, reason in plan.stale_ids.items():
        await crm_writes_repo.finish(session, [row_id], CrmWriteState.SUPERSEDED, now, reason)
    answer = await written_apart(client, plan.writes) if plan.writes else FieldsWritten({}, {})
    refused = result.refused
    written: set[int] = set()
    for write in plan.writes:
        ids = plan.ids[write.key]
        if write.key in answer.refused:
            reason = answer.refused[write.key]
            await crm_writes_repo.finish(session, ids, CrmWriteState.FAILED, now, reason)
            refused[write.contact_id] = plan.emails[write.key]
        elif write.key in answer.written:
            await crm_writes_repo.finish(session, ids, CrmWriteState.DONE, now)
            written.add(write.contact_id)
    result.written += len(written)
    result.failed += len(plan.failed) + sum(len(plan.ids[f"c{cid}"]) for cid in refused)
    log.info(
        "crm_writes.round",
        account_id=account_id,
        contacts=len(plan.writes),
        refused=len(refused),
        crm_won=len(plan.stale_ids),
        unconvertible=len(plan.failed),
        superseded=len(plan.superseded),
    )
    return written


# Calls one split may make (a few bad contacts among a round's: about two per halving level each); beyond it,
# or when the refusal turns out to be every contact's, the refusal is the whole request's: raised for the job.
SPLIT_CALLS = 32


async def written_apart(client: CrmClient, writes: Sequence[CrmFieldWrite]) -> FieldsWritten:
    """``writes`` sent; a request the CRM refuses as invalid (400/422) without naming the item at fault (a
    shape Kommo's documents do not show, but a refusal all the same) is sent again in halves, down to single
    contacts, so the one refused is told apart and failed instead of the whole set retried for ever with it
    inside. A refusal every contact meets (a field deleted in Kommo, a request we build wrongly) is no item's:
    it is raised, as is one the split cannot narrow within ``SPLIT_CALLS``."""
    try:
        return await client.write_contact_fields(writes)
    except RequestError as exc:
        if exc.status_code not in (400, 422) or len(writes) < 2:
            raise
        budget = [SPLIT_CALLS]
        answer = await _split(client, list(writes), exc, budget)
        if not answer.written:
            raise  # every contact refused: the request's fault, not one item's
        return answer


async def _split(
    client: CrmClient, writes: list[CrmFieldWrite], refusal: RequestError, budget: list[int]
) -> FieldsWritten:
    half = len(writes) // 2
    out = FieldsWritten({}, {})
    for part in (writes[:half], writes[half:]):
        if budget[0] <= 0:
            raise refusal
        budget[0] -= 1
        try:
            answer = await client.write_contact_fields(part)
        except RequestError as exc:
            if exc.status_code not in (400, 422):
                raise
            if len(part) == 1:
                answer = FieldsWritten({}, {part[0].key: describe(exc)})
            else:
                answer = await _split(client, part, refusal, budget)
        out.written.update(answer.written)
        out.refused.update(answer.refused)
    return out


async def _catch_up(
    session: AsyncSession,
    account_id: int,
    written: Mapping[int, CrmContact],
    done: Sequence[int],
    read_at: datetime,
) -> bool:
    """Our copy of the contacts just written (``done``: the rows written), after the write.

    A contact whose live version (read before the write) is newer than our copy was edited in the CRM in
    another field, and that version's webhook is still on its way carrying the CRM's old values of the fields
    the platform changed: applied after our write it would put them back for a moment (pushed to the platform,
    then undone by our write's webhook). Our copy takes the live version now, so that webhook is no longer
    newer, and the platform values the CRM's webhooks have not confirmed are put back: the ones just written,
    and pending ones our copy still held (a CRM edit of the field since replaced the others). The same puts
    back a written value that such a webhook, arriving during the write, already replaced. True when
    addresses were re-derived (a flush may be due)."""
    if not written:
        return False
    await account_lock(session, account_id)
    stored = await contacts_repo.stored_of(session, account_id, written)  # under the lock
    # A stored version later than the live one read before the write is a CRM edit made after our write: it
    # stands (our write's own webhook is older than it and will not apply).
    live = {
        cid: c
        for cid, c in written.items()
        if cid in stored and not stored[cid].deleted and stored[cid].version <= c.updated_at
    }
    ahead = [c for cid, c in live.items() if c.updated_at > stored[cid].version]
    caught_up = {c.id for c in ahead}
    just_written = set(done)
    restore: list[tuple[CrmWrite, str]] = []
    for row in await crm_writes_repo.unconfirmed_values(session, account_id, list(live), done):
        text = _stored_text(row)
        if text is None:
            continue
        held = stored[row.kommo_id]
        holds = field_times.source_text(row.source, held.name, held.data) == text
        ahead_here = row.kommo_id in caught_up
        if (row.id in just_written and (ahead_here or not holds)) or (
            row.id not in just_written and holds and ahead_here
        ):
            restore.append((row, text))
    if not ahead and not restore:
        return False
    emails: set[str] = set()
    if ahead:
        emails |= (await service.apply_contacts(session, account_id, ahead, read_at=read_at)).affected
    for row, text in restore:
        ref = source_ref(row.source, row.field_type)
        at = int(row.unisender_at.timestamp())
        await crm_writes_repo.set_contact_value(session, account_id, row.kommo_id, ref, text, changed_at=at)
        emails.add(row.email)
    await service.recompute(session, account_id, emails)
    return True


async def _rederive(
    session: AsyncSession,
    account_id: int,
    contacts: Sequence[CrmContact],
    read_at: datetime,
    emails: Mapping[int, set[str]],
) -> None:
    """Our copies of these contacts took the platform's values already: the live versions (the truth as of
    the read, before any write of this round) replace them, and their addresses are re-derived, so the CRM's
    values are pushed back to the platform."""
    await account_lock(session, account_id)
    applied = await service.apply_contacts(session, account_id, contacts, read_at=read_at)
    await service.recompute(session, account_id, set(applied.affected).union(*emails.values()))
