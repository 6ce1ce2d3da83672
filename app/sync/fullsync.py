"""Full sync (every Kommo contact, with vanish detection) and incremental reconcile (missed webhooks).

A full sync runs as a chain of short jobs: each pages Kommo for up to ``SLICE_SECONDS``, committing contacts,
desired states and the cursor after every page, then enqueues its continuation. A killed worker therefore
loses only the pages fetched but not yet committed, and the run resumes from its checkpoint. A fetcher task
pages Kommo at the rate limit while the pages are committed behind it (in order), and pushes to the email
platform run concurrently in flush jobs.

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
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.kommo import kommo_client_for
from app.connectors.base import ContactPage, CrmContact
from app.connectors.kommo.client import KommoClient
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import SyncRun
from app.db.session import after_commit
from app.sync import outbox, service
from app.sync import repository as repo
from app.sync.isolation import describe, isolatable
from app.worker import enqueue

log = structlog.get_logger(__name__)

PAGE_SIZE = 250
SLICE_SECONDS = 40.0  # well inside the worker's job timeout
# Page requests in flight at once: at 7 req/s one request may take up to ~0.28 s before latency, not the
# rate limit, sets the pace (real Kommo pages take ~0.2-0.5 s).
FETCH_CONCURRENCY = 2
# Fetched pages waiting for their commit: one second of Kommo's budget, so the burst a fresh rate window
# allows is taken at once even though commits are slower than fetches for a moment (a cold start, a lock
# wait, an ANALYZE); bounded, because memory and what a killed worker fetches again grow with it.
QUEUE_PAGES = 7
VERIFY_CHUNK = 250
RECONCILE_OVERLAP = 60  # seconds of updated_at re-read, for changes stamped while the last pass ran
RECONCILE_MAX_PAGES = 40
# A slice's hold on its run: renewed every third of it (and by every committed page), so a live slice keeps
# it through a slow page, and a dead one loses it at most this long after its last renewal.
LEASE_SECONDS = 10.0
MAX_SLICE_FAILURES = 3  # unexpected failures in a row (without a committed page) before the run fails
SHOWN_FAILURES = 100  # contacts a run could not apply, listed by GET /sync/runs/{id}


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
    read_at: datetime  # when it was requested: what we stored before is older than what it says


@dataclass
class _SliceEnd:
    """The fetcher stopped at the deadline; ``resume`` is the first page it did not hand over."""

    resume: int


_Item = _Page | _SliceEnd | BaseException


async def _fetch(client: KommoClient, number: int) -> _Page:
    read_at = utcnow()
    return _Page(number, await client.list_contacts(page=number, limit=PAGE_SIZE), read_at)


async def _fetch_pages(client: KommoClient, first: int, deadline: float, out: asyncio.Queue[_Item]) -> None:
    """Fetch pages ``first``, ``first + 1`` … into ``out`` in page order, up to FETCH_CONCURRENCY requests at
    once, until the last page (a page without a next one) or the deadline.

    Kommo pages by number, so the following pages can be requested before the current one has arrived; that
    keeps the rate limiter, not Kommo's latency, the pace. ``out`` is bounded: when the committer falls
    behind, fetching waits, so memory and the pages re-read after a crash stay bounded. A fetch error is
    handed over in order too, so the pages before it are still committed.
    """
    inflight: deque[asyncio.Task[_Page]] = deque()
    number = first
    try:
        while True:
            while len(inflight) < FETCH_CONCURRENCY and time.monotonic() < deadline:
                inflight.append(asyncio.create_task(_fetch(client, number)))
                number += 1
            if not inflight:
                await out.put(_SliceEnd(number))
                return
            task = inflight.popleft()
            try:
                fetched = await task
            except Exception as exc:
                await out.put(exc)
                return
            await out.put(fetched)
            following = fetched.page.next_page
            if following is None:
                return  # the last page: anything requested after it is past the end
            if following != fetched.number + 1:
                # Not the numbering we speculated on: drop the guesses and follow the link.
                _cancel_all(inflight)
                number = following
    finally:
        _cancel_all(inflight)


def _cancel_all(tasks: deque[asyncio.Task[_Page]]) -> None:
    while tasks:
        task = tasks.popleft()
        task.cancel()
        # A fetch that already failed must not be reported as "exception never retrieved".
        task.add_done_callback(_consume)


def _consume(task: asyncio.Task[_Page]) -> None:
    if not task.cancelled():
        task.exception()


class _Pusher:
    """Pushes the outbox of the account while the slice commits pages, in this job rather than in one
    arq flush job per page: no queue round trips, no jobs retrying against each other's flush lock, and the
    rows of the last page go out as soon as it is committed. Another flusher holding the account (e.g. a
    job the sweeper started) pushes our rows too; the next page tries again. When Unisender asks us to wait
    (or the account cannot push), a flush job takes over at the end, with its own retry and backoff.
    """

    def __init__(self, pc: ProcessContext, account_id: int) -> None:
        self._pc = pc
        self._account_id = account_id
        self._wanted = False
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # the last pass found another flusher at work
        self._handoff: float | None = None  # delay of the flush job to enqueue at the end, if any

    def poke(self) -> None:
        """New rows are committed: push them (now, or after the pass under way)."""
        self._wanted = True
        if self._handoff is None and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._wanted:
            self._wanted = False
            try:
                result = await outbox.flush_account(self._pc, self._account_id)
            except Exception as exc:
                log.warning("sync.push_failed", account_id=self._account_id, error=repr(exc))
                self._handoff = 0.0
                return
            if result.blocked is not None or result.retry_in is not None:
                self._handoff = result.retry_in or 0.0
                return
            self._busy = result.busy

    async def drain(self, within: float) -> None:
        """Push what is committed, for at most ``within`` seconds (the job's timeout must not cut the slice
        short: its continuation is enqueued after this), then hand what may be left to a flush job."""
        self.poke()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=max(0.0, within))
            if not done:
                # A backlog (the pusher fell behind the pages): a flush job pushes the rest. A batch cut off
                # mid-import is sent again; importing the same rows twice is harmless.
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._handoff = 0.0
        if self._handoff is not None or self._busy:
            await enqueue.flush_outbox(self._pc.queue, self._account_id, delay=self._handoff or 0.0)

    def cancel(self) -> None:
        """Stop pushing (the slice is being torn down): the sweeper finds the rows left pending."""
        if self._task is not None:
            self._task.cancel()


def _lease_until(extra: float = 0.0) -> datetime:
    return utcnow() + timedelta(seconds=LEASE_SECONDS + extra)


async def _keep_lease(pc: ProcessContext, run_id: str, owner: str) -> None:
    """Renew the slice's lease while it runs (page commits renew it too, but a page may take a while)."""
    while True:
        await asyncio.sleep(LEASE_SECONDS / 3)
        try:
            async with pc.db.session_scope() as session:
                if not await repo.extend_lease(session, run_id, owner, _lease_until()):
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
        if run is None or run.status in ("done", "failed"):
            return run.status if run else "missing"
        account_id = run.account_id
        integ = await repo.get_integration(session, account_id)
        if integ is None or integ.status == "disabled":
            run.status, run.error, run.finished_at = "failed", "integration disabled", utcnow()
            run.lease_owner = run.lease_expires_at = None
            return run.status
        if not await repo.claim_run(session, run_id, owner, _lease_until()):
            log.info("sync.leased", run_id=run_id)
            return "leased"
        await session.refresh(run)
        if run.status == "pending":
            run.status, run.started_at = "running", utcnow()
        cursor = int(run.cursor or 0)
        client = await kommo_client_for(pc, account_id)
    lease = asyncio.create_task(_keep_lease(pc, run_id, owner))
    try:
        status = await _advance(pc, run_id, account_id, owner, client, cursor, deadline, push_deadline)
    finally:
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease
    if status == "running":
        # Handed over: the lease is released first, so the continuation can take the run at once.
        async with pc.db.session_scope() as session:
            await repo.release_lease(session, run_id, owner)
        await enqueue.full_sync(pc.queue, run_id)
    return status


async def _advance(
    pc: ProcessContext,
    run_id: str,
    account_id: int,
    owner: str,
    client: KommoClient,
    cursor: int,
    deadline: float,
    push_deadline: float,
) -> str:
    """The slice's work once it holds the run: fetch and commit pages from ``cursor + 1`` until the deadline
    or the last page, then push what was committed. Returns ``running`` (go on in a new slice), ``done`` or
    ``stopped`` (the run is no longer this slice's)."""
    pages: asyncio.Queue[_Item] = asyncio.Queue(maxsize=QUEUE_PAGES)
    fetcher = asyncio.create_task(_fetch_pages(client, cursor + 1, deadline, pages))
    pusher = _Pusher(pc, account_id)
    analyzer: asyncio.Task[None] | None = None
    status = "running"
    try:
        while True:
            item = await pages.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _SliceEnd):
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
            await repo.analyze_mirror(session)
    except Exception as exc:
        log.warning("sync.analyze_failed", error=repr(exc))


async def _commit_page(
    pc: ProcessContext, run_id: str, account_id: int, owner: str, fetched: _Page
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
    except _ApplyFailed as failed:
        log.warning("sync.page_failed", run_id=run_id, page=fetched.number, reason=failed.reason)
        queued = await _apply_one_by_one(pc, run_id, account_id, owner, contacts, fetched.read_at)
        if queued is not None:
            queued = await _apply_for_run(pc, run_id, account_id, owner, [], fetched.read_at, advance=fetched)
    if queued is not None:
        log.info(
            "sync.page", run_id=run_id, account_id=account_id, page=fetched.number, contacts=len(contacts)
        )
    return queued


class _ApplyFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _apply_for_run(
    pc: ProcessContext,
    run_id: str,
    account_id: int,
    owner: str,
    contacts: Sequence[CrmContact],
    read_at: datetime,
    *,
    advance: _Page | None = None,
    gone: Sequence[int] = (),
) -> int | None:
    """One transaction of the run: apply ``contacts`` (read at ``read_at``), delete ``gone``, recompute, count
    and, with ``advance``, move the cursor to that page. Returns the addresses queued for a push; None when
    the run is no longer this slice's. Raises ``_ApplyFailed`` (rolled back) for failures the data may have
    caused."""
    async with pc.db.session_scope() as session:
        await repo.account_lock(session, account_id)
        run = await repo.held_run(session, run_id, owner)
        if run is None:
            return None
        try:
            applied = await service.apply_contacts(
                session, account_id, contacts, read_at=read_at, run_id=run_id
            )
            deleted = await service.delete_contacts(session, account_id, gone)
            rec = await service.recompute(session, account_id, applied.affected | deleted.affected)
        except Exception as exc:
            if not isolatable(exc):
                raise
            raise _ApplyFailed(describe(exc)) from exc
        run.changed += applied.changed + deleted.changed
        run.pushed += rec.queued
        if advance is not None:
            run.fetched += len(advance.page.contacts)
            run.cursor = advance.number
            # Progress: the failures counted so far were not in a row, and their error is not the run's.
            run.slice_failures, run.error = 0, None
        run.lease_expires_at = _lease_until()
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
        except _ApplyFailed as failed:
            async with pc.db.session_scope() as session:
                await repo.record_sync_failure(session, run_id, contact.id, failed.reason)
            log.warning("sync.contact_failed", run_id=run_id, kommo_id=contact.id, reason=failed.reason)
            continue
        if one is None:
            return None
        queued += one
    return queued


async def _finish(pc: ProcessContext, run_id: str, account_id: int, owner: str, client: KommoClient) -> str:
    """Vanish detection: live contacts this run never saw are re-read from Kommo; the missing are deleted.
    Returns the run's status (``stopped`` if it is no longer this slice's)."""
    async with pc.db.session_scope() as session:
        candidates = await repo.unseen_live_contacts(session, account_id, run_id)
    vanished = 0
    for start in range(0, len(candidates), VERIFY_CHUNK):
        chunk = candidates[start : start + VERIFY_CHUNK]
        read_at = utcnow()
        live = await client.get_contacts(chunk)
        gone = sorted(set(chunk) - {c.id for c in live})
        try:
            queued = await _apply_for_run(pc, run_id, account_id, owner, live, read_at, gone=gone)
        except _ApplyFailed as failed:
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
        run = await repo.held_run(session, run_id, owner)
        if run is None:
            return "stopped"
        now = utcnow()
        run.status, run.finished_at, run.updated_at = "done", now, now
        run.lease_owner = run.lease_expires_at = None
    log.info("sync.done", run_id=run_id, account_id=account_id, vanished=vanished)
    return "done"


async def fail_run(pc: ProcessContext, run_id: str, error: str) -> None:
    async with pc.db.session_scope() as session:
        run = await session.get(SyncRun, run_id)
        if run is not None and run.status in ("pending", "running"):
            run.status, run.error, run.finished_at = "failed", error[:1000], utcnow()
            run.lease_owner = run.lease_expires_at = None


async def slice_failed(pc: ProcessContext, run_id: str, owner: str, exc: Exception) -> float | None:
    """A slice of the run failed unexpectedly: count it on the run. Returns the delay before the job should try
    again, holding the run's lease for it meanwhile (so the sweeper does not start another job); None when
    this was the ``MAX_SLICE_FAILURES``-th failure in a row and the run is now ``failed`` with the error."""
    reason = exc.reason if isinstance(exc, _ApplyFailed) else describe(exc)
    async with pc.db.session_scope() as session:
        failures = await repo.count_slice_failure(session, run_id, reason)
    log.warning("sync.slice_failed", run_id=run_id, failures=failures, reason=reason)
    if failures == 0:
        return None  # the run had finished already
    if failures >= MAX_SLICE_FAILURES:
        await fail_run(pc, run_id, f"gave up after {failures} failed attempts: {reason}")
        return None
    delay = 2.0**failures
    await hold_for_retry(pc, run_id, owner, delay)
    return delay


async def hold_for_retry(pc: ProcessContext, run_id: str, owner: str, delay: float) -> None:
    """Keep the slice's lease until its retry is due: the sweeper must not hand the run to another job before
    (after a rate limit, that would only draw another 429)."""
    async with pc.db.session_scope() as session:
        await repo.extend_lease(session, run_id, owner, _lease_until(extra=delay))


async def reconcile_account(pc: ProcessContext, account_id: int) -> int:
    """Re-read contacts updated since the last pass (catches webhooks Kommo never delivered)."""
    async with pc.db.session_scope() as session:
        integ = await repo.get_integration(session, account_id)
        if integ is None or integ.status != "connected":
            return 0
        since = max(0, int(integ.reconcile_cursor or int(time.time()) - 3600) - RECONCILE_OVERLAP)
        client = await kommo_client_for(pc, account_id)
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
        except _ApplyFailed as failed:
            log.warning("reconcile.page_failed", account_id=account_id, reason=failed.reason)
            for contact in result.contacts:
                try:
                    changed += await _reconcile_apply(pc, account_id, [contact], read_at)
                except _ApplyFailed as one:
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
        integ = await repo.get_integration(session, account_id)
        if integ is not None:
            integ.reconcile_cursor, integ.reconciled_at = newest, utcnow()
    if changed:
        log.info("reconcile.changed", account_id=account_id, changed=changed)
    return changed


async def _reconcile_apply(
    pc: ProcessContext, account_id: int, contacts: Sequence[CrmContact], read_at: datetime
) -> int:
    async with pc.db.session_scope() as session:
        await repo.account_lock(session, account_id)
        try:
            applied = await service.apply_contacts(session, account_id, contacts, read_at=read_at)
            rec = await service.recompute(session, account_id, applied.affected)
        except Exception as exc:
            if not isolatable(exc):
                raise
            raise _ApplyFailed(describe(exc)) from exc
        if rec.queued:
            after_commit(session, lambda: enqueue.flush_outbox(pc.queue, account_id))
    return applied.changed
