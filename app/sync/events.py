"""Inbox processing: turn stored webhook bodies into contact versions and desired address states.

Events are applied in batches, one transaction each. One bad event must never hold up the account's others,
so when a batch fails for a reason the data may have caused (``isolation.isolatable``) its events are applied
again in halves, each half in its own transaction, down to single events. A single event's attempt is counted
in a short transaction of its own before it is applied, so the rollback of a failed apply cannot undo the
count, and an event that kills its worker is counted too; after ``MAX_EVENT_ATTEMPTS`` it is marked ``failed``
with its reason (shown on ``GET /accounts/{id}``). Until then it is retried by later jobs, alone, while the
events after it are applied: versions carry Kommo's ``updated_at`` and deletions are verified at Kommo, so the
order events are applied in does not change the result.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.connectors.base import CrmAction, CrmContact
from app.connectors.errors import WebhookParseError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import account_lock
from app.db.models import WebhookEvent
from app.db.session import after_commit
from app.db.states import EventSource, EventStatus, IntegrationStatus
from app.queue import enqueue
from app.sync import contacts_repo, crm_writes_repo, inbox_repo, mapping, providers, service, spec_repo
from app.sync.isolation import ApplyFailed, in_halves, isolating

log = structlog.get_logger(__name__)

BATCH = 500
MAX_BATCHES = 50  # bounded: a continuation job (or the sweeper) goes on
# Share of the worker's job timeout one job may spend draining, as for a full-sync slice: past the timeout
# arq cancels the job, the batch in flight rolls back and the same work is done again later.
DEADLINE_SHARE = 0.6
MAX_EVENT_ATTEMPTS = 5  # tries of one event on its own; then it is "failed" with its reason
# A webhook version stamped further ahead of our clock than this is not believed (see _apply).
MAX_FUTURE_SKEW = 300


@dataclass
class DrainResult:
    events: int = 0
    failed: int = 0
    changed: int = 0
    queued: int = 0
    busy: bool = False
    more: bool = False  # stopped at the deadline or the batch cap: events may be left for a continuation


@dataclass
class _Step:
    """What one transaction found: ``suspects`` are events that failed alone before and must be tried alone."""

    empty: bool = False  # nothing pending (or the account is busy or disabled): stop
    suspects: tuple[int, ...] = ()


async def process_kommo_events(
    pc: ProcessContext, account_id: int, *, deadline: float | None = None
) -> DrainResult:
    """Apply the account's pending Kommo events, in arrival order, in batches, until none is left or the
    deadline (``time.monotonic()``; default ``DEADLINE_SHARE`` of the job timeout from now) passes; returns
    what it did. ``more`` means it stopped early and the caller should enqueue a continuation.

    Another job already draining this account makes this one return ``busy`` (the caller retries shortly).
    """
    if deadline is None:
        deadline = time.monotonic() + DEADLINE_SHARE * pc.settings.worker_job_timeout
    total = DrainResult()
    set_aside: set[int] = set()  # failed alone in this job: left for a later job, so the others go on
    for batch_no in range(MAX_BATCHES):
        if batch_no and time.monotonic() >= deadline:
            # Checked between batches (each commits): the first always runs, so every job makes progress.
            total.more = True
            log.info("events.deadline", account_id=account_id, events=total.events, batches=batch_no)
            return total
        try:
            step = await _apply(pc, account_id, total, exclude=set_aside)
        except ApplyFailed as failed:
            log.warning(
                "events.batch_failed", account_id=account_id, events=len(failed.ids), reason=failed.reason
            )
            isolated = await in_halves(
                failed.ids,
                group=lambda ids: _apply(pc, account_id, total, only=ids),
                alone=lambda event_id: _apply_alone(pc, account_id, event_id, total),
                set_aside=set_aside,
                deadline=deadline,
            )
            if not isolated:
                total.more = True
                return total
            continue
        if step.empty:
            return total
        for event_id in step.suspects:
            if time.monotonic() >= deadline:
                total.more = True
                return total
            if not await _apply_alone(pc, account_id, event_id, total):
                set_aside.add(event_id)
    total.more = True  # MAX_BATCHES full batches: there may be more
    return total


async def _apply_alone(pc: ProcessContext, account_id: int, event_id: int, total: DrainResult) -> bool:
    """Apply one event in its own transaction (``try_alone``); False if it failed."""
    outcome = await try_alone(
        pc,
        event_id,
        lambda: _apply(pc, account_id, total, only=[event_id], counted=True),
        log_as="events",
        account_id=account_id,
    )
    if outcome is Alone.FAILED:
        total.failed += 1
    return outcome is Alone.APPLIED


class Alone(StrEnum):
    APPLIED = "applied"  # or handled meanwhile by another job
    RETRY = "retry"  # failed: tried alone again by a later job
    FAILED = "failed"  # failed for good (MAX_EVENT_ATTEMPTS)


async def try_alone(
    pc: ProcessContext,
    event_id: int,
    apply: Callable[[], Awaitable[object]],
    *,
    log_as: str,
    account_id: int,
) -> Alone:
    """One stored event applied by ``apply`` (its own transaction, raising ``ApplyFailed`` when the event may
    be at fault), its attempt counted in another transaction first: a rollback cannot undo the count, and an
    attempt that kills its worker counts too, so a poison event fails for good after ``MAX_EVENT_ATTEMPTS``
    with its reason. Trouble that is not the event's (PostgreSQL, the provider) takes the attempt back and is
    raised for the job."""
    async with pc.db.session_scope() as session:
        counted = await inbox_repo.count_event_attempt(session, event_id)
    if counted is None:
        return Alone.APPLIED  # handled meanwhile (another job, or the account was disabled)
    attempts, last_error = counted
    # Past the limit, every earlier attempt was counted yet none recorded an outcome: the process died or the
    # job was cancelled while applying it.
    reason = f"gave up after {MAX_EVENT_ATTEMPTS} attempts: {last_error or 'no attempt finished'}"
    if attempts <= MAX_EVENT_ATTEMPTS:
        try:
            await apply()
            return Alone.APPLIED
        except ApplyFailed as failed:
            reason = failed.reason
        except Exception:
            with contextlib.suppress(Exception):
                async with pc.db.session_scope() as session:
                    await inbox_repo.count_event_attempt(session, event_id, undo=True)
            raise
    final = attempts >= MAX_EVENT_ATTEMPTS
    async with pc.db.session_scope() as session:
        await inbox_repo.record_event_failure(session, event_id, reason, final=final)
    fields = {"account_id": account_id, "event_id": event_id, "attempts": attempts, "reason": reason}
    if final:
        log.error(f"{log_as}.event_failed", **fields)
        return Alone.FAILED
    log.warning(f"{log_as}.event_retry", **fields)
    return Alone.RETRY


async def _apply(
    pc: ProcessContext,
    account_id: int,
    total: DrainResult,
    *,
    exclude: set[int] | None = None,
    only: Sequence[int] | None = None,
    counted: bool = False,
) -> _Step:
    """One transaction: the next batch of pending events (or the pending ones of ``only``), applied and
    marked done. Events that failed alone before are not applied in a batch: they come back as suspects.
    ``counted``: the attempt was already counted (a single event). Raises ``ApplyFailed`` (rolled back) when applying fails for a reason the events may have caused."""
    async with pc.db.session_scope() as session:
        # A batch gives way to a job already draining the account; isolation waits for it (its batch is short).
        if not await account_lock(session, account_id, wait=only is not None):
            total.busy = True
            return _Step(empty=True)
        if only is None:
            events = await inbox_repo.pending_events(
                session, account_id, EventSource.KOMMO, BATCH, exclude=exclude
            )
            if not events:
                return _Step(empty=True)
        else:
            events = await inbox_repo.pending_events_by_ids(session, account_id, only)
            if not events:
                return _Step()
        integ = await accounts_repo.get_integration(session, account_id)
        if integ is None or integ.status == IntegrationStatus.DISABLED:
            for ev in events:
                ev.status, ev.handled_at, ev.last_error = EventStatus.DONE, utcnow(), "integration disabled"
            return _Step(empty=True)
        suspects: tuple[int, ...] = ()
        if only is None:
            suspects = tuple(ev.id for ev in events if ev.last_error is not None)
            events = [ev for ev in events if ev.last_error is None]
        if not events:
            return _Step(suspects=suspects)
        with isolating([ev.id for ev in events]):
            changed, queued = await _apply_events(session, pc, account_id, events, total, counted=counted)
        integ.last_event_at = utcnow()
        total.events += len(events)
        total.changed += changed
        total.queued += queued
        if queued:
            after_commit(session, lambda: enqueue.flush_outbox(pc.queue, account_id))
    log.info(
        "events.applied",
        account_id=account_id,
        events=len(events),
        changed=changed,
        queued=queued,
        lag_s=round(time.time() - events[0].received_at.timestamp(), 3),
    )
    return _Step(suspects=suspects)


def tied_in_batch(versions: Sequence[CrmContact]) -> set[int]:
    """The contacts of which ``versions`` holds two that differ but carry the same, latest, stamp."""
    latest: dict[int, list[CrmContact]] = {}
    for c in versions:
        kept = latest.get(c.id)
        if kept is None or c.updated_at > kept[0].updated_at:
            latest[c.id] = [c]
        elif c.updated_at == kept[0].updated_at:
            kept.append(c)
    return {cid for cid, tied in latest.items() if any(v != tied[0] for v in tied[1:])}


async def _apply_events(
    session: AsyncSession,
    pc: ProcessContext,
    account_id: int,
    events: list[WebhookEvent],
    total: DrainResult,
    *,
    counted: bool,
) -> tuple[int, int]:
    """Apply the events' contact versions, verify what needs verifying at Kommo, recompute the touched
    addresses and mark the events done; returns (contacts changed, addresses queued)."""
    versions: list[CrmContact] = []
    verify: set[int] = set()
    # Refused rather than clamped: a clamped version would still carry the forger's content (an address
    # injected into Unisender until the contact's next real edit). Its contact is verified instead: what Kommo
    # holds is read and applied, so a genuine change whose clock ran ahead is not lost either.
    horizon = int(time.time()) + MAX_FUTURE_SKEW
    for ev in events:
        if not counted:
            ev.attempts += 1
        try:
            batch = providers.parse_crm_webhook(ev.body.encode())
        except WebhookParseError as exc:
            ev.status, ev.last_error, ev.handled_at = EventStatus.FAILED, f"unparsable body: {exc}", utcnow()
            total.failed += 1
            continue
        for item in batch.events:
            if item.action in (CrmAction.DELETE, CrmAction.RESTORE) or item.contact is None:
                # Deletions carry no timestamp and a restore may race one: ask Kommo what is true now.
                verify.add(item.contact_id)
            elif item.contact.updated_at > horizon:
                verify.add(item.contact_id)
            else:
                versions.append(item.contact)
    # An add/update of a contact we hold as deleted may be a stale version: verify it too. So is a version
    # stamped in the same second as the one we hold, or as another of this batch, that says something else:
    # Kommo stamps changes in whole seconds, so of two edits made within one second the stamps cannot tell
    # which came last (and only a strictly newer stamp applies). Not while platform values wait to be written
    # to the contact: our copy holds them on purpose, ahead of Kommo, and the webhook of their write settles it.
    # A mapped date field in Kommo's old birthday layout is stored as REST reads it (``mapping.typed_days``).
    if mapping.has_day_texts(versions):
        _, spec = await spec_repo.current_spec(session, account_id)
        versions = mapping.typed_days(versions, spec.date_fields())
    known = await contacts_repo.contacts_by_ids(session, account_id, {c.id for c in versions})
    tied = tied_in_batch(versions)
    for c in versions:
        row = known.get(c.id)
        if row is None:
            continue
        if row.deleted_at is not None:
            verify.add(c.id)
        elif c.updated_at == row.kommo_updated_at and not service.holds(row, c):
            tied.add(c.id)
    if tied:
        verify |= tied - await crm_writes_repo.contacts_with_pending_writes(session, account_id, tied)
    versions = [c for c in versions if c.id not in verify]
    applied = await service.apply_contacts(session, account_id, versions)
    affected = set(applied.affected)
    changed = applied.changed
    if verify:
        client = await providers.crm_client(pc, account_id)
        read_at = utcnow()
        live = await client.get_contacts(sorted(verify))
        alive = await service.apply_contacts(session, account_id, live, read_at=read_at)
        gone = await service.delete_contacts(
            session, account_id, verify - {c.id for c in live}, read_at=read_at
        )
        affected |= alive.affected | gone.affected
        changed += alive.changed + gone.changed
    rec = await service.recompute(session, account_id, affected)
    now = utcnow()
    for ev in events:
        if ev.status == EventStatus.PENDING:
            ev.status, ev.handled_at, ev.last_error = EventStatus.DONE, now, None
    return changed, rec.queued
