"""Inbox processing: turn stored webhook bodies into contact versions and desired address states."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from app.accounts.service import kommo_client_for
from app.connectors.base import CrmAction, CrmContact
from app.connectors.kommo.exceptions import KommoWebhookParseError
from app.connectors.kommo.webhooks import parse_webhook
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.session import after_commit
from app.sync import repository as repo
from app.sync import service
from app.worker import enqueue

log = structlog.get_logger(__name__)

BATCH = 500
MAX_BATCHES = 50  # bounded: a continuation job (or the sweeper) goes on
# Share of the worker's job timeout one job may spend draining, as for a full-sync slice: past the timeout
# arq cancels the job, the batch in flight rolls back and the same work is done again later.
DEADLINE_SHARE = 0.6


@dataclass
class DrainResult:
    events: int = 0
    failed: int = 0
    changed: int = 0
    queued: int = 0
    busy: bool = False
    more: bool = False  # stopped at the deadline or the batch cap: events may be left for a continuation


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
    for batch_no in range(MAX_BATCHES):
        if batch_no and time.monotonic() >= deadline:
            # Checked between batches (each commits): the first always runs, so every job makes progress.
            total.more = True
            log.info("events.deadline", account_id=account_id, events=total.events, batches=batch_no)
            return total
        async with pc.db.session_scope() as session:
            if not await repo.account_lock(session, account_id, wait=False):
                total.busy = True
                return total
            events = await repo.pending_events(session, account_id, "kommo", BATCH)
            if not events:
                return total
            integ = await repo.get_integration(session, account_id)
            if integ is None or integ.status == "disabled":
                for ev in events:
                    ev.status, ev.handled_at, ev.last_error = "done", utcnow(), "integration disabled"
                return total
            versions: list[CrmContact] = []
            verify: set[int] = set()
            for ev in events:
                ev.attempts += 1
                try:
                    batch = parse_webhook(ev.body.encode())
                except KommoWebhookParseError as exc:
                    ev.status, ev.last_error, ev.handled_at = "failed", f"unparsable body: {exc}", utcnow()
                    total.failed += 1
                    continue
                for item in batch.events:
                    if item.action in (CrmAction.DELETE, CrmAction.RESTORE) or item.contact is None:
                        # Deletions carry no timestamp and a restore may race one: ask Kommo what is true now.
                        verify.add(item.contact_id)
                    else:
                        versions.append(item.contact)
            # An add/update of a contact we hold as deleted may be a stale version: verify it too.
            known = await repo.contacts_by_ids(session, account_id, {c.id for c in versions})
            for c in versions:
                row = known.get(c.id)
                if row is not None and row.deleted_at is not None:
                    verify.add(c.id)
            versions = [c for c in versions if c.id not in verify]
            applied = await service.apply_contacts(session, account_id, versions)
            affected = set(applied.affected)
            changed = applied.changed
            if verify:
                client = await kommo_client_for(session, pc, account_id)
                live = await client.get_contacts(sorted(verify))
                alive = await service.apply_contacts(session, account_id, live, authoritative=True)
                gone = await service.delete_contacts(session, account_id, verify - {c.id for c in live})
                affected |= alive.affected | gone.affected
                changed += alive.changed + gone.changed
            rec = await service.recompute(session, account_id, affected)
            now = utcnow()
            for ev in events:
                if ev.status == "pending":
                    ev.status, ev.handled_at, ev.last_error = "done", now, None
            integ.last_event_at = now
            total.events += len(events)
            total.changed += changed
            total.queued += rec.queued
            if rec.queued:
                after_commit(session, lambda: enqueue.flush_outbox(pc.queue, account_id))
        log.info(
            "events.applied",
            account_id=account_id,
            events=len(events),
            changed=changed,
            queued=rec.queued,
            lag_s=round(time.time() - events[0].received_at.timestamp(), 3),
        )
    total.more = True  # MAX_BATCHES full batches: there may be more
    return total
