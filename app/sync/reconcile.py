"""Incremental reconcile: every few minutes, re-read the contacts the CRM says changed since the last pass and
apply them as live reads, catching changes whose webhooks never arrived."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import structlog

from app.accounts import repository as accounts_repo
from app.connectors.base import CrmContact
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import account_lock
from app.db.session import after_commit
from app.db.states import IntegrationStatus
from app.queue import enqueue
from app.sync import providers, runs_repo, service
from app.sync.isolation import ApplyFailed, isolating
from app.sync.pages import PAGE_SIZE

log = structlog.get_logger(__name__)

RECONCILE_OVERLAP = 60  # seconds of updated_at re-read, for changes stamped while the last pass ran
RECONCILE_MAX_PAGES = 40
FIRST_PASS_SECONDS = 3600  # how far back an account's first pass looks


async def reconcile_account(pc: ProcessContext, account_id: int) -> int:
    """Re-read contacts updated since the last pass (catches webhooks Kommo never delivered). Not while a full
    sync of the account runs: it reads every contact anyway, and this pass's pages (up to
    ``RECONCILE_MAX_PAGES``) would come out of the same Kommo budget, slowing it; the cursor stays, so the first
    pass after it covers the time it ran."""
    async with pc.db.session_scope() as session:
        integ = await accounts_repo.get_integration(session, account_id)
        if integ is None or integ.status != IntegrationStatus.CONNECTED:
            return 0
        first = int(time.time()) - FIRST_PASS_SECONDS
        if await runs_repo.active_run(session, account_id) is not None:
            if integ.reconcile_cursor is None:
                # Where this pass would have begun, kept: a first sync longer than the first pass's reach
                # back must not leave the changes made while it ran to a pass that no longer looks that far.
                integ.reconcile_cursor = first
            log.info("reconcile.skipped_during_full_sync", account_id=account_id)
            return 0
        since = max(0, int(integ.reconcile_cursor or first) - RECONCILE_OVERLAP)
    client = await providers.crm_client(pc, account_id)  # after the session: it reads through its own
    page: int | None = 1
    newest = since
    changed = 0
    for _ in range(RECONCILE_MAX_PAGES):
        if page is None:
            break
        read_at = utcnow()
        result = await client.list_contacts(page=page, limit=PAGE_SIZE, updated_since=since)
        try:
            changed += await _reconcile_apply(pc, account_id, result.contacts, read_at)
        except ApplyFailed as failed:
            log.warning("reconcile.page_failed", account_id=account_id, reason=failed.reason)
            for contact in result.contacts:
                try:
                    changed += await _reconcile_apply(pc, account_id, [contact], read_at)
                except ApplyFailed as one:
                    log.warning(
                        "reconcile.contact_failed",
                        account_id=account_id,
                        kommo_id=contact.id,
                        reason=one.reason,
                    )
        # A timestamp from the future (clock skew, a bad record) must not move the watermark past now: every
        # change stamped before it would be skipped until then.
        newest = min(max([newest, *(c.updated_at for c in result.contacts)]), int(time.time()))
        page = result.next_page
    async with pc.db.session_scope() as session:
        integ = await accounts_repo.get_integration(session, account_id)
        if integ is not None:
            integ.reconcile_cursor, integ.reconciled_at = newest, utcnow()
    if changed:
        log.info("reconcile.changed", account_id=account_id, changed=changed)
    return changed


async def _reconcile_apply(
    pc: ProcessContext, account_id: int, contacts: Sequence[CrmContact], read_at: datetime
) -> int:
    async with pc.db.session_scope() as session:
        await account_lock(session, account_id)
        with isolating():
            applied = await service.apply_contacts(session, account_id, contacts, read_at=read_at)
            rec = await service.recompute(session, account_id, applied.affected)
        if rec.queued:
            after_commit(session, lambda: enqueue.flush_outbox(pc.queue, account_id))
    return applied.changed
