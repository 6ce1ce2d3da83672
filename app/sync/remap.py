"""Re-deriving an account after its sync spec changed (``remap`` runs).

Every address of the account is derived again with the new spec and queued only where the result differs
from what the platform holds (``service.recompute``); the pushes go through the outbox at the platform's
rate, behind live changes (its rows are ``bulk``). The walk goes in chunks of ``CHUNK`` addresses, each its
own short transaction under the account lock; between chunks the walk applies the account's pending
webhook events itself (an events job that finds the account locked gives way to the holder, on the promise
that the holder drains them), so live changes never wait for the whole walk. Its cursor (the last address id
done) is committed with each chunk, and the run holds a lease like a full sync's, so a killed worker's walk
resumes where it stopped (re-deriving a chunk twice queues nothing twice).

A newer spec stored while a walk runs supersedes it: the old run ends ``done`` with a note and a new walk
starts from the first address.
"""

from __future__ import annotations

import time
import uuid

import structlog
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import account_lock
from app.db.models import SyncRun
from app.db.session import after_commit
from app.db.states import EventSource, RunKind, RunStatus
from app.queue import enqueue
from app.sync import consent_repo, events, runs_repo, service, unsubscribes
from app.sync.fullsync import SLICE_SECONDS, lease_until

log = structlog.get_logger(__name__)

CHUNK = 500


async def start_remap(session: AsyncSession, queue: ArqRedis, account_id: int, version: int) -> SyncRun:
    """Start re-deriving the account for spec ``version`` (the caller holds the account lock and commits);
    a walk still going for an older spec is superseded."""
    old = await runs_repo.active_run(session, account_id, RunKind.REMAP)
    now = utcnow()
    if old is not None:
        old.status, old.finished_at, old.updated_at = RunStatus.DONE, now, now
        old.error = f"superseded by spec version {version}"
        old.lease_owner = old.lease_expires_at = None
    run = SyncRun(
        id=str(uuid.uuid4()), account_id=account_id, kind=RunKind.REMAP, status=RunStatus.PENDING, cursor=0
    )
    session.add(run)
    await session.flush()
    run_id = run.id
    after_commit(session, lambda: enqueue.full_sync(queue, account_id, run_id))
    return run


async def run_remap_slice(pc: ProcessContext, run_id: str, owner: str) -> str:
    """Advance a remap run for up to SLICE_SECONDS; returns its status (``leased``: another job holds it)."""
    deadline = time.monotonic() + min(SLICE_SECONDS, 0.6 * pc.settings.worker_job_timeout)
    async with pc.db.session_scope() as session:
        run = await session.get(SyncRun, run_id)
        if run is None or run.status not in RunStatus.active():
            return run.status if run else "missing"
        account_id = run.account_id
        if not await runs_repo.claim_run(session, run_id, owner, lease_until()):
            return "leased"
        await session.refresh(run)
        if run.status == RunStatus.PENDING:
            run.status, run.started_at = RunStatus.RUNNING, utcnow()
    status: str = RunStatus.RUNNING
    while time.monotonic() < deadline:
        await _live_first(pc, account_id, deadline)
        step = await _chunk(pc, run_id, account_id, owner)
        if step is None:
            return "stopped"
        queued, done = step
        if queued:
            await enqueue.flush_outbox(pc.queue, account_id, delay=0)
        if done:
            status = RunStatus.DONE
            break
    if status == RunStatus.RUNNING:
        async with pc.db.session_scope() as session:
            await runs_repo.release_lease(session, run_id, owner)
        await enqueue.full_sync(pc.queue, account_id, run_id)
    return status


async def _live_first(pc: ProcessContext, account_id: int, deadline: float) -> None:
    """Apply the webhook events that arrived meanwhile (their jobs gave way to this walk's lock)."""
    drained = await events.process_kommo_events(pc, account_id, deadline=deadline)
    esp = await unsubscribes.process_unisender_events(pc, account_id, deadline=deadline)
    if drained.more:
        await enqueue.process_events(pc.queue, account_id)
    if esp.more:
        await enqueue.process_events(pc.queue, account_id, EventSource.UNISENDER)


async def _chunk(pc: ProcessContext, run_id: str, account_id: int, owner: str) -> tuple[int, bool] | None:
    """Derive the next CHUNK addresses: (queued, walk finished), or None when the run is not ours any more."""
    async with pc.db.session_scope() as session:
        await account_lock(session, account_id)
        run = await runs_repo.held_run(session, run_id, owner)
        if run is None:
            return None
        addresses = await consent_repo.addresses_after(session, account_id, int(run.cursor or 0), CHUNK)
        rec = await service.recompute(session, account_id, [email for _, email in addresses], bulk=True)
        now = utcnow()
        run.fetched += len(addresses)
        run.changed += rec.differs
        run.pushed += rec.queued
        run.lease_expires_at, run.updated_at = lease_until(), now
        run.slice_failures, run.error = 0, None
        if addresses:
            run.cursor = addresses[-1][0]
        done = len(addresses) < CHUNK
        if done:
            run.status, run.finished_at = RunStatus.DONE, now
            run.lease_owner = run.lease_expires_at = None
            log.info(
                "remap.done", run_id=run_id, account_id=account_id, addresses=run.fetched, changed=run.changed
            )
    return rec.queued, done
