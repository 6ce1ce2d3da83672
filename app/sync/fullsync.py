"""Full sync (every Kommo contact, with vanish detection) and incremental reconcile (missed webhooks).

A full sync runs as a chain of short jobs: each pages Kommo for up to ``SLICE_SECONDS``, committing contacts,
desired states and the cursor after every page, then enqueues its continuation. A killed worker therefore
loses at most one page of work, and the run resumes from its checkpoint. Fetching the next page overlaps
with writing the current one, and pushes to the email platform run concurrently in flush jobs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import kommo_client_for
from app.connectors.base import ContactPage
from app.connectors.kommo.client import KommoClient
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import SyncRun
from app.db.session import after_commit
from app.sync import repository as repo
from app.sync import service
from app.worker import enqueue

log = structlog.get_logger(__name__)

PAGE_SIZE = 250
SLICE_SECONDS = 40.0  # well inside the worker's job timeout
VERIFY_CHUNK = 250
RECONCILE_OVERLAP = 60  # seconds of updated_at re-read, for changes stamped while the last pass ran
RECONCILE_MAX_PAGES = 40


async def start_run(session: AsyncSession, account_id: int) -> tuple[SyncRun, bool]:
    """Create a full-sync run, or return the one already running (False). The caller commits and enqueues."""
    await repo.account_lock(session, account_id)
    running = await repo.active_run(session, account_id)
    if running is not None:
        return running, False
    run = SyncRun(id=str(uuid.uuid4()), account_id=account_id, kind="full", status="pending", cursor=0)
    session.add(run)
    await session.flush()
    return run, True


@dataclass
class _Page:
    number: int
    page: ContactPage


async def _fetch(client: KommoClient, number: int) -> _Page:
    return _Page(number, await client.list_contacts(page=number, limit=PAGE_SIZE))


async def run_full_sync_slice(pc: ProcessContext, run_id: str) -> str:
    """Advance a run for up to SLICE_SECONDS; returns its status afterwards."""
    # A slice must end well inside the job timeout, or arq would cancel it mid-page.
    deadline = time.monotonic() + min(SLICE_SECONDS, 0.6 * pc.settings.worker_job_timeout)
    async with pc.db.session_scope() as session:
        run = await session.get(SyncRun, run_id)
        if run is None or run.status in ("done", "failed"):
            return run.status if run else "missing"
        account_id = run.account_id
        integ = await repo.get_integration(session, account_id)
        if integ is None or integ.status == "disabled":
            run.status, run.error, run.finished_at = "failed", "integration disabled", utcnow()
            return run.status
        if run.status == "pending":
            run.status, run.started_at = "running", utcnow()
        cursor = int(run.cursor or 0)
        run.updated_at = utcnow()
        client = await kommo_client_for(session, pc, account_id)
    prefetch: asyncio.Task[_Page] | None = asyncio.create_task(_fetch(client, cursor + 1))
    try:
        while prefetch is not None:
            fetched = await prefetch
            prefetch = None
            following = fetched.page.next_page
            if following is not None and time.monotonic() < deadline:
                prefetch = asyncio.create_task(_fetch(client, following))
            await _commit_page(pc, run_id, account_id, fetched)
            if following is None:
                await _finish(pc, run_id, account_id, client)
                return "done"
            if prefetch is None:
                break  # slice used up: continue in a new job from the checkpoint
    except BaseException:
        if prefetch is not None:
            prefetch.cancel()
        raise
    await enqueue.full_sync(pc.queue, run_id)
    return "running"


async def _commit_page(pc: ProcessContext, run_id: str, account_id: int, fetched: _Page) -> None:
    async with pc.db.session_scope() as session:
        await repo.account_lock(session, account_id)
        run = await session.get(SyncRun, run_id)
        if run is None or run.status != "running":
            return
        applied = await service.apply_contacts(
            session, account_id, fetched.page.contacts, authoritative=True, run_id=run_id
        )
        rec = await service.recompute(session, account_id, applied.affected)
        run.fetched += len(fetched.page.contacts)
        run.changed += applied.changed
        run.pushed += rec.queued
        run.cursor = fetched.number
        run.updated_at = utcnow()
        if rec.queued:
            after_commit(session, lambda: enqueue.flush_outbox(pc.queue, account_id, delay=0))
    log.info(
        "sync.page",
        run_id=run_id,
        account_id=account_id,
        page=fetched.number,
        contacts=len(fetched.page.contacts),
    )


async def _finish(pc: ProcessContext, run_id: str, account_id: int, client: KommoClient) -> None:
    """Vanish detection: live contacts this run never saw are re-read from Kommo; the missing are deleted."""
    async with pc.db.session_scope() as session:
        candidates = await repo.unseen_live_contacts(session, account_id, run_id)
    vanished = 0
    for start in range(0, len(candidates), VERIFY_CHUNK):
        chunk = candidates[start : start + VERIFY_CHUNK]
        live = await client.get_contacts(chunk)
        async with pc.db.session_scope() as session:
            await repo.account_lock(session, account_id)
            alive = await service.apply_contacts(session, account_id, live, authoritative=True, run_id=run_id)
            gone = await service.delete_contacts(session, account_id, set(chunk) - {c.id for c in live})
            await service.recompute(session, account_id, alive.affected | gone.affected)
            vanished += gone.changed
            after_commit(session, lambda: enqueue.flush_outbox(pc.queue, account_id, delay=0))
    async with pc.db.session_scope() as session:
        run = await session.get(SyncRun, run_id)
        if run is not None:
            run.status, run.finished_at, run.updated_at = "done", utcnow(), utcnow()
            run.changed += vanished
    log.info("sync.done", run_id=run_id, account_id=account_id, vanished=vanished)


async def fail_run(pc: ProcessContext, run_id: str, error: str) -> None:
    async with pc.db.session_scope() as session:
        run = await session.get(SyncRun, run_id)
        if run is not None and run.status in ("pending", "running"):
            run.status, run.error, run.finished_at = "failed", error[:1000], utcnow()


async def reconcile_account(pc: ProcessContext, account_id: int) -> int:
    """Re-read contacts updated since the last pass (catches webhooks Kommo never delivered)."""
    async with pc.db.session_scope() as session:
        integ = await repo.get_integration(session, account_id)
        if integ is None or integ.status != "connected":
            return 0
        since = max(0, int(integ.reconcile_cursor or int(time.time()) - 3600) - RECONCILE_OVERLAP)
        client = await kommo_client_for(session, pc, account_id)
    page: int | None = 1
    newest = since
    changed = 0
    for _ in range(RECONCILE_MAX_PAGES):
        if page is None:
            break
        result = await client.list_contacts(page=page, limit=PAGE_SIZE, updated_since=since)
        async with pc.db.session_scope() as session:
            await repo.account_lock(session, account_id)
            applied = await service.apply_contacts(session, account_id, result.contacts, authoritative=True)
            rec = await service.recompute(session, account_id, applied.affected)
            changed += applied.changed
            if rec.queued:
                after_commit(session, lambda: enqueue.flush_outbox(pc.queue, account_id))
        newest = max([newest, *(c.updated_at for c in result.contacts)])
        page = result.next_page
    async with pc.db.session_scope() as session:
        integ = await repo.get_integration(session, account_id)
        if integ is not None:
            integ.reconcile_cursor, integ.reconciled_at = newest, utcnow()
    if changed:
        log.info("reconcile.changed", account_id=account_id, changed=changed)
    return changed
