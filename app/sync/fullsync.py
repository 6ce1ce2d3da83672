"""Full sync: every CRM contact applied as a live read, then vanish detection; the run's lifecycle and lease.

A full sync runs as a chain of short jobs: each pages the CRM for up to ``SLICE_SECONDS``, committing contacts,
desired states and the cursor after every page, then enqueues its continuation. A killed worker therefore
loses only the pages fetched but not yet committed, and the run resumes from its checkpoint. A fetcher task
pages the CRM at the rate limit while the pages are committed behind it, in order, and the pushes to the email
platform run meanwhile (``app.sync.pages``).

A slice holds a lease on its run (owner + expiry, ``LEASE_SECONDS``), renewed while it runs and checked in
every page's transaction: two jobs never advance one run at once, and the lease of a slice whose worker died
expires within ``LEASE_SECONDS``, after which the sweeper (every 10 s) hands the run to a new job. A killed
worker's run thus resumes within about 25 s, whatever the job timeout (arq itself re-runs a killed job only
after the job timeout + 10 s).

A page that fails to apply for a reason its data may have caused is applied again contact by contact; the
contacts that still fail are recorded on the run (``sync_failure``) and the run goes on. A slice that fails
unexpectedly is retried a few times (``MAX_SLICE_FAILURES`` in a row), then the run ends ``failed`` with its
error, so a new run can be started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.connectors.base import CrmClient, CrmContact
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import account_lock
from app.db.models import Integration, SyncRun
from app.db.session import after_commit
from app.db.states import IntegrationStatus, RunKind, RunStatus
from app.errors import Unprocessable
from app.queue import enqueue
from app.retry import backoff
from app.sync import contacts_repo, providers, runs_repo, service
from app.sync.isolation import ApplyFailed, describe, isolating
from app.sync.pages import QUEUE_PAGES, Page, PageItem, Pusher, SliceEnd, fetch_pages

log = structlog.get_logger(__name__)

SLICE_SECONDS = 40.0  # well inside the worker's job timeout
VERIFY_CHUNK = 250
# A slice's hold on its run: renewed every third of it (and by every committed page), so a live slice keeps
# it through a slow page, and a dead one loses it at most this long after its last renewal.
LEASE_SECONDS = 10.0
MAX_SLICE_FAILURES = 3  # unexpected failures in a row (without a committed page) before the run fails
SHOWN_FAILURES = 100  # contacts a run could not apply, listed by GET /sync/runs/{id}


async def start_run(session: AsyncSession, queue: ArqRedis, integration: Integration) -> tuple[SyncRun, bool]:
    """Start a full sync of a connected account, or return the run already going (False); its first slice is
    enqueued once the caller commits. 422 ``kommo_not_connected`` for an account that is not connected."""
    account_id = integration.account_id
    if integration.status != IntegrationStatus.CONNECTED:
        raise Unprocessable(
            f"Account {account_id} is {integration.status}: connect Kommo first "
            "(open the auth_url that POST /integration returns).",
            code="kommo_not_connected",
        )
    await account_lock(session, account_id)
    running = await runs_repo.active_run(session, account_id)
    if running is not None:
        return running, False
    run = SyncRun(
        id=str(uuid.uuid4()), account_id=account_id, kind=RunKind.FULL, status=RunStatus.PENDING, cursor=0
    )
    session.add(run)
    await session.flush()
    run_id = run.id
    after_commit(session, lambda: enqueue.full_sync(queue, account_id, run_id))
    return run, True


def lease_until(extra: float = 0.0) -> datetime:
    return utcnow() + timedelta(seconds=LEASE_SECONDS + extra)


async def _keep_lease(pc: ProcessContext, run_id: str, owner: str) -> None:
    """Renew the slice's lease while it runs (page commits renew it too, but a page may take a while)."""
    while True:
        await asyncio.sleep(LEASE_SECONDS / 3)
        try:
            async with pc.db.session_scope() as session:
                if not await runs_repo.extend_lease(session, run_id, owner, lease_until()):
                    return  # finished or taken over: the page commits notice and stop
        except Exception as exc:  # the next renewal (or a page commit) tries again
            log.warning("sync.lease_renewal_failed", run_id=run_id, error=type(exc).__name__)


async def run_full_sync_slice(pc: ProcessContext, run_id: str, *, owner: str | None = None) -> str:
    """Advance a run for up to SLICE_SECONDS; returns its status afterwards (``leased``: another slice holds
    the run and advances it).

    ``owner`` names the slice in the run's lease; a retried job passes the same one so it may take its own
    lease back. A fetcher task pages Kommo at the pace of the rate limiter while this coroutine commits the
    pages behind it, one transaction per page and strictly in page order, so the checkpoint cursor only moves
    forward and a killed worker resumes after the last committed page without skipping any.
    """
    owner = owner or f"slice:{uuid.uuid4().hex}"
    # A slice stops fetching well inside the job timeout, or arq would cancel it mid-page; the pages already
    # fetched are still committed (at most FETCH_CONCURRENCY + QUEUE_PAGES of them), and the pushes under way
    # get until 0.85 × the timeout, so the continuation is always enqueued.
    started = time.monotonic()
    deadline = started + min(SLICE_SECONDS, 0.6 * pc.settings.worker_job_timeout)
    push_deadline = started + 0.85 * pc.settings.worker_job_timeout
    async with pc.db.session_scope() as session:
        run = await session.get(SyncRun, run_id)
        if run is None or run.status in (RunStatus.DONE, RunStatus.FAILED):
            return run.status if run else "missing"
        account_id = run.account_id
        integ = await accounts_repo.get_integration(session, account_id)
        if integ is None or integ.status == IntegrationStatus.DISABLED:
            run.status, run.error, run.finished_at = RunStatus.FAILED, "integration disabled", utcnow()
            run.lease_owner = run.lease_expires_at = None
            return run.status
        if not await runs_repo.claim_run(session, run_id, owner, lease_until()):
            log.info("sync.leased", run_id=run_id)
            return "leased"
        await session.refresh(run)
        if run.status == RunStatus.PENDING:
            run.status, run.started_at = RunStatus.RUNNING, utcnow()
        cursor = int(run.cursor or 0)
        client = await providers.crm_client(pc, account_id)
    lease = asyncio.create_task(_keep_lease(pc, run_id, owner))
    try:
        status = await _advance(pc, run_id, account_id, owner, client, cursor, deadline, push_deadline)
    finally:
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease
    if status == RunStatus.RUNNING:
        # Handed over: the lease is released first, so the continuation can take the run at once.
        async with pc.db.session_scope() as session:
            await runs_repo.release_lease(session, run_id, owner)
        await enqueue.full_sync(pc.queue, account_id, run_id)
    return status


async def _advance(
    pc: ProcessContext,
    run_id: str,
    account_id: int,
    owner: str,
    client: CrmClient,
    cursor: int,
    deadline: float,
    push_deadline: float,
) -> str:
    """The slice's work once it holds the run: fetch and commit pages from ``cursor + 1`` until the deadline
    or the last page, then push what was committed. Returns ``running`` (go on in a new slice), ``done`` or
    ``stopped`` (the run is no longer this slice's)."""
    pages: asyncio.Queue[PageItem] = asyncio.Queue(maxsize=QUEUE_PAGES)
    fetcher = asyncio.create_task(fetch_pages(client, cursor + 1, deadline, pages))
    pusher = Pusher(pc, account_id)
    analyzer: asyncio.Task[None] | None = None
    status: str = RunStatus.RUNNING
    try:
        while True:
            item = await pages.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, SliceEnd):
                break  # slice used up: continue in a new job from the checkpoint
            queued = await _commit_page(pc, run_id, account_id, owner, item)
            if queued is None:
                status = "stopped"  # the run was ended elsewhere, or another slice took it over
                break
            if queued:
                pusher.poke()
            if item.number & (item.number - 1) == 0 and (analyzer is None or analyzer.done()):
                # Pages 1, 2, 4, 8 …: the tables' statistics keep up with the account as it doubles.
                analyzer = asyncio.create_task(_analyze(pc))
            if item.page.next_page is None:
                status = await _finish(pc, run_id, account_id, owner, client)
                break
    except BaseException:
        pusher.cancel()
        raise
    finally:
        # Cancel-safe: whatever ends this slice (error, arq's timeout, shutdown) stops the fetcher and its
        # requests; uncommitted pages are simply fetched again by the next slice.
        for task in (fetcher, analyzer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    await pusher.drain(within=push_deadline - time.monotonic())
    return status


async def _analyze(pc: ProcessContext) -> None:
    """Best effort: without fresh statistics lookups get slower, never wrong."""
    try:
        async with pc.db.session_scope() as session:
            await contacts_repo.analyze_mirror(session)
    except Exception as exc:
        log.warning("sync.analyze_failed", error=repr(exc))


async def _commit_page(
    pc: ProcessContext, run_id: str, account_id: int, owner: str, fetched: Page
) -> int | None:
    """Apply one page and move the cursor to it; returns how many addresses it queued for a push, or None
    when the run is no longer this slice's to advance.

    One transaction normally. If applying the page fails for a reason its contacts may have caused, they are
    applied one by one instead, those that still fail are recorded on the run, and the cursor moves on.
    """
    contacts = fetched.page.contacts
    try:
        queued = await _apply_for_run(
            pc, run_id, account_id, owner, contacts, fetched.read_at, advance=fetched
        )
    except ApplyFailed as failed:
        log.warning("sync.page_failed", run_id=run_id, page=fetched.number, reason=failed.reason)
        queued = await _apply_one_by_one(pc, run_id, account_id, owner, contacts, fetched.read_at)
        if queued is not None:
            queued = await _apply_for_run(pc, run_id, account_id, owner, [], fetched.read_at, advance=fetched)
    if queued is not None:
        log.info(
            "sync.page", run_id=run_id, account_id=account_id, page=fetched.number, contacts=len(contacts)
        )
    return queued


async def _apply_for_run(
    pc: ProcessContext,
    run_id: str,
    account_id: int,
    owner: str,
    contacts: Sequence[CrmContact],
    read_at: datetime,
    *,
    advance: Page | None = None,
    gone: Sequence[int] = (),
) -> int | None:
    """One transaction of the run: apply ``contacts`` (read at ``read_at``), delete ``gone``, recompute, count
    and, with ``advance``, move the cursor to that page. Returns the addresses queued for a push; None when
    the run is no longer this slice's. Raises ``ApplyFailed`` (rolled back) for failures the data may have
    caused."""
    async with pc.db.session_scope() as session:
        await account_lock(session, account_id)
        run = await runs_repo.held_run(session, run_id, owner)
        if run is None:
            return None
        with isolating():
            applied = await service.apply_contacts(
                session, account_id, contacts, read_at=read_at, run_id=run_id
            )
            deleted = await service.delete_contacts(session, account_id, gone, read_at=read_at)
            rec = await service.recompute(session, account_id, applied.affected | deleted.affected)
        run.changed += applied.changed + deleted.changed
        run.pushed += rec.queued
        if advance is not None:
            run.fetched += len(advance.page.contacts)
            run.cursor = advance.number
            # Progress: the failures counted so far were not in a row, and their error is not the run's.
            run.slice_failures, run.error = 0, None
        run.lease_expires_at = lease_until()
        run.updated_at = utcnow()
    return rec.queued


async def _apply_one_by_one(
    pc: ProcessContext,
    run_id: str,
    account_id: int,
    owner: str,
    contacts: Sequence[CrmContact],
    read_at: datetime,
) -> int | None:
    """Apply contacts each in its own transaction; record those that fail on the run. None: not ours."""
    queued = 0
    for contact in contacts:
        try:
            one = await _apply_for_run(pc, run_id, account_id, owner, [contact], read_at)
        except ApplyFailed as failed:
            async with pc.db.session_scope() as session:
                await runs_repo.record_sync_failure(session, run_id, contact.id, failed.reason)
            log.warning("sync.contact_failed", run_id=run_id, kommo_id=contact.id, reason=failed.reason)
            continue
        if one is None:
            return None
        queued += one
    return queued


async def _finish(pc: ProcessContext, run_id: str, account_id: int, owner: str, client: CrmClient) -> str:
    """Vanish detection: live contacts this run never saw are re-read from Kommo; the missing are deleted.
    Returns the run's status (``stopped`` if it is no longer this slice's)."""
    async with pc.db.session_scope() as session:
        candidates = await contacts_repo.unseen_live_contacts(session, account_id, run_id)
    vanished = 0
    for start in range(0, len(candidates), VERIFY_CHUNK):
        chunk = candidates[start : start + VERIFY_CHUNK]
        read_at = utcnow()
        live = await client.get_contacts(chunk)
        gone = sorted(set(chunk) - {c.id for c in live})
        try:
            queued = await _apply_for_run(pc, run_id, account_id, owner, live, read_at, gone=gone)
        except ApplyFailed as failed:
            log.warning("sync.verify_failed", run_id=run_id, contacts=len(chunk), reason=failed.reason)
            queued = await _apply_one_by_one(pc, run_id, account_id, owner, live, read_at)
            if queued is not None:
                queued = await _apply_for_run(pc, run_id, account_id, owner, [], read_at, gone=gone)
        if queued is None:
            return "stopped"
        vanished += len(gone)
        if queued:
            await enqueue.flush_outbox(pc.queue, account_id, delay=0)
    async with pc.db.session_scope() as session:
        run = await runs_repo.held_run(session, run_id, owner)
        if run is None:
            return "stopped"
        now = utcnow()
        run.status, run.finished_at, run.updated_at = RunStatus.DONE, now, now
        run.lease_owner = run.lease_expires_at = None
    log.info("sync.done", run_id=run_id, account_id=account_id, vanished=vanished)
    return RunStatus.DONE


async def fail_run(pc: ProcessContext, run_id: str, error: str, owner: str) -> None:
    """End the run ``failed`` with ``error``, unless another slice holds it now."""
    async with pc.db.session_scope() as session:
        await runs_repo.fail_run(session, run_id, error, owner)


async def slice_failed(pc: ProcessContext, run_id: str, owner: str, exc: Exception) -> float | None:
    """A slice of the run failed unexpectedly: count it on the run. Returns the delay before the job should try
    again, holding the run's lease for it meanwhile (so the sweeper does not start another job); None when
    this was the ``MAX_SLICE_FAILURES``-th failure in a row and the run is now ``failed`` with the error."""
    reason = exc.reason if isinstance(exc, ApplyFailed) else describe(exc)
    async with pc.db.session_scope() as session:
        failures = await runs_repo.count_slice_failure(session, run_id, reason, owner)
    log.warning("sync.slice_failed", run_id=run_id, failures=failures, reason=reason)
    if failures == 0:
        return None  # the run had finished already
    if failures >= MAX_SLICE_FAILURES:
        await fail_run(pc, run_id, f"gave up after {failures} failed attempts: {reason}", owner)
        return None
    delay = backoff(failures, base=1.0, cap=60.0, jitter=0.0)  # 2 s, 4 s …
    await hold_for_retry(pc, run_id, owner, delay)
    return delay


async def hold_for_retry(pc: ProcessContext, run_id: str, owner: str, delay: float) -> None:
    """Keep the slice's lease until its retry is due: the sweeper must not hand the run to another job before
    (after a rate limit, that would only draw another 429)."""
    async with pc.db.session_scope() as session:
        await runs_repo.extend_lease(session, run_id, owner, lease_until(extra=delay))
