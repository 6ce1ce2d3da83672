"""Job functions. Jobs take ids, reload from PostgreSQL and are idempotent: any job may run twice or be lost
(the sweeper re-finds lost work from the tables)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from arq import Retry
from sqlalchemy.exc import DBAPIError

from app import metrics
from app.accounts import repository as accounts_repo
from app.accounts.errors import AccountNotReady
from app.accounts.kommo import refresh_expiring_tokens
from app.accounts.webhooks import ensure_kommo_webhooks
from app.connectors.errors import ConnectorError, PermanentError, TransientError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.states import EventSource, OutboxStatus, RunKind, RunStatus
from app.deadletters import repository as deadletters_repo
from app.queue import enqueue
from app.retry import backoff
from app.sync import (
    activity,
    activity_repo,
    campaigns,
    consent_repo,
    crm_writes_repo,
    events,
    fullsync,
    inbox_repo,
    outbox,
    outbox_repo,
    remap,
    runs_repo,
    signups,
    signups_repo,
    specs,
    two_way_sync,
    unsubscribes,
)
from app.sync import crm_writes as crm_writes_mod
from app.sync.isolation import isolatable
from app.sync.reconcile import reconcile_account

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Looks again while another job holds the account (each a Retry; arq's max_tries is 25).
EVENTS_BUSY_RETRIES = 4  # the holder drains every pending event, ours included
FLUSH_BUSY_RETRIES = 20  # a live-change flush stops after a partial batch, so ours must outlast it


def process_context(ctx: dict[str, Any]) -> ProcessContext:
    pc: ProcessContext = ctx["process"]
    return pc


def _retry_after(ctx: dict[str, Any], exc: TransientError) -> Retry:
    """Backoff with full jitter, at least what the provider asked for."""
    attempt = int(ctx.get("job_try", 1))
    delay = backoff(attempt, exc.retry_after, base=1.0, cap=120.0)
    log.warning(
        "job.retry", error=type(exc).__name__, code=exc.code, retry_in=round(delay, 2), attempt=attempt
    )
    return Retry(defer=delay)


def _busy(ctx: dict[str, Any], retries: int) -> None:
    """Another job holds this account's lock: look again shortly, up to ``retries`` times.

    An events job's holder drains until nothing is pending, so it takes our work too unless it was already
    past its last look when our rows committed; a look after it has finished covers that. Retrying more would
    only spin (a burst of webhooks wakes many jobs), and the sweeper re-finds anything left after 5 s.
    """
    if int(ctx.get("job_try", 1)) < retries:
        raise Retry(defer=0.2 + random.random() * 0.3)


async def ping(ctx: dict[str, Any], value: str = "pong") -> str:
    """Trivial task proving the queue wiring end to end."""
    log.info("worker.ping", value=value)
    return value


async def process_events(ctx: dict[str, Any], account_id: int, source: str = EventSource.KOMMO) -> int:
    pc = process_context(ctx)
    structlog.contextvars.bind_contextvars(account_id=account_id, source=source)
    try:
        if source == EventSource.UNISENDER:
            drained = await unsubscribes.process_unisender_events(pc, account_id)
            handled, busy, more = drained.handled, drained.busy, drained.more
            await _wake_two_way(pc, account_id)
        else:
            result = await events.process_kommo_events(pc, account_id)
            handled, busy, more = result.events, result.busy, result.more
        if more:
            # Stopped at its deadline with events left: go on in a fresh job rather than wait for the
            # sweeper (which re-finds events only once they are 5 s old).
            await enqueue.process_events(pc.queue, account_id, source)
    except TransientError as exc:
        raise _retry_after(ctx, exc) from exc
    except (AccountNotReady, PermanentError) as exc:
        await _record_account_error(pc, account_id, exc)
        return 0
    if busy:
        _busy(ctx, EVENTS_BUSY_RETRIES)
    metrics.JOBS.labels("process_events", "ok").inc()
    return handled


async def flush_outbox(ctx: dict[str, Any], account_id: int) -> int:
    pc = process_context(ctx)
    structlog.contextvars.bind_contextvars(account_id=account_id)
    result = await outbox.flush_account(pc, account_id, drain=False)
    if result.busy:
        _busy(ctx, FLUSH_BUSY_RETRIES)
    elif result.retry_in is not None:
        await enqueue.flush_outbox(pc.queue, account_id, delay=result.retry_in)
    elif result.more:
        # A backlog (e.g. after a large sync): go on in a fresh job now rather than at the next sweep.
        await enqueue.flush_outbox(pc.queue, account_id, delay=0)
    metrics.JOBS.labels("flush_outbox", "ok").inc()
    return result.pushed


async def full_sync(ctx: dict[str, Any], run_id: str) -> str:
    """One slice of a run: a full sync, or the re-derivation after a spec change (``remap``). The job's id names the slice in the run's lease: arq retries a job under
    the same id, so a retry takes its own lease back while any other job finds the run held."""
    pc = process_context(ctx)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    owner = str(ctx.get("job_id") or f"slice:{uuid.uuid4().hex}")
    try:
        async with pc.db.session_scope() as session:
            kind = await runs_repo.run_kind(session, run_id)
        if kind is RunKind.REMAP:
            return await remap.run_remap_slice(pc, run_id, owner)
        return await fullsync.run_full_sync_slice(pc, run_id, owner=owner)
    except TransientError as exc:
        retry = _retry_after(ctx, exc)
        await fullsync.hold_for_retry(pc, run_id, owner, (retry.defer_score or 0) / 1000)
        raise retry from exc
    except (AccountNotReady, PermanentError) as exc:
        await fullsync.fail_run(pc, run_id, f"{type(exc).__name__}: {exc}", owner)
        return RunStatus.FAILED
    except Exception as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise  # PostgreSQL restarted: the job is retried on a fresh connection (worker.settings)
        if not isolatable(exc):
            raise  # PostgreSQL unreachable or busy, not the run's fault: its lease expires, the sweeper goes on
        return await _slice_failed(pc, run_id, owner, exc)


async def _slice_failed(pc: ProcessContext, run_id: str, owner: str, exc: Exception) -> str:
    """An unexpected failure must not leave the run "running" with no job: retry a few times, then fail it."""
    delay = await fullsync.slice_failed(pc, run_id, owner, exc)
    if delay is None:
        return RunStatus.FAILED
    raise Retry(defer=delay) from exc


async def tag_unsubscribes(ctx: dict[str, Any], account_id: int) -> int:
    return await _account_job(ctx, account_id, unsubscribes.tag_unsubscribed_contacts) or 0


async def activity_notes(ctx: dict[str, Any], account_id: int) -> int:
    """Write the account's pending email activity to its CRM contacts as notes."""
    result = await _account_job(ctx, account_id, activity.write_activity_notes)
    if result is None:
        return 0
    if result.more:
        await enqueue.activity_notes(process_context(ctx).queue, account_id)
    elif result.wait:
        await enqueue.activity_notes_window(process_context(ctx).queue, account_id, after=result.wait)
    return result.notes


async def refresh_campaigns(ctx: dict[str, Any], account_id: int) -> int:
    """Read the account's campaigns and their totals into the cache. Not retried: the next tick (10 minutes)
    reads them again, and until then the notes name a campaign from the list read alone."""
    pc = process_context(ctx)
    structlog.contextvars.bind_contextvars(account_id=account_id)
    try:
        result = await campaigns.refresh_campaigns(pc, account_id)
    except (ConnectorError, AccountNotReady) as exc:
        log.warning("campaigns.refresh_failed", account_id=account_id, error=type(exc).__name__)
        return 0
    metrics.JOBS.labels("refresh_campaigns", "ok").inc()
    return result.campaigns


async def signup_contacts(ctx: dict[str, Any], account_id: int) -> int:
    """Create the CRM contacts of the account's newsletter signups (``app.sync.signups``)."""
    result = await _account_job(ctx, account_id, signups.create_signup_contacts)
    if result is None:
        return 0
    if result.busy:
        _busy(ctx, EVENTS_BUSY_RETRIES)  # the holder settles every pending row, ours included
    elif result.more:
        await enqueue.signup_contacts(process_context(ctx).queue, account_id)
    metrics.JOBS.labels("signup_contacts", "ok").inc()
    return result.created


async def crm_writes(ctx: dict[str, Any], account_id: int) -> int:
    """Write into the CRM the values two-way fields took in the email platform."""
    result = await _account_job(ctx, account_id, crm_writes_mod.write_crm_fields)
    if result is None:
        return 0
    queue = process_context(ctx).queue
    if result.busy:
        _busy(ctx, EVENTS_BUSY_RETRIES)
    if result.more:
        await enqueue.crm_writes(queue, account_id)
    if result.rederived:
        await enqueue.flush_outbox(queue, account_id)
    metrics.JOBS.labels("crm_writes", "ok").inc()
    return result.written


async def reconcile_two_way(ctx: dict[str, Any], account_id: int) -> int:
    """Find the two-way field changes the email platform's hook did not bring (its export). Not retried: the
    next reconcile tick (5 minutes) exports again."""
    pc = process_context(ctx)
    structlog.contextvars.bind_contextvars(account_id=account_id)
    try:
        counts = await two_way_sync.reconcile_two_way(pc, account_id)
    except (ConnectorError, AccountNotReady) as exc:
        log.warning("two_way.reconcile_failed", account_id=account_id, error=type(exc).__name__)
        return 0
    await _wake_two_way(pc, account_id)
    return sum(counts.values())


async def _wake_two_way(pc: ProcessContext, account_id: int) -> None:
    """Two-way changes queue CRM writes and (the CRM's value winning) pushes: start both (after the commit
    of the job that made them)."""
    async with pc.db.session_scope() as session:
        writes = await crm_writes_repo.has_pending_writes(session, account_id)
        due = await crm_writes_repo.has_due_outbox(session, account_id)
    if writes:
        await enqueue.crm_writes(pc.queue, account_id)
    if due:
        await enqueue.flush_outbox(pc.queue, account_id)


async def _account_job(
    ctx: dict[str, Any], account_id: int, work: Callable[[ProcessContext, int], Awaitable[T]]
) -> T | None:
    """What every per-account CRM job does around its work: bind the account to its log lines, leave what is
    transient to the worker's backoff (retries belong to the worker), and record on the account what no retry
    can fix (None: the job stops; the account shows why)."""
    pc = process_context(ctx)
    structlog.contextvars.bind_contextvars(account_id=account_id)
    try:
        return await work(pc, account_id)
    except TransientError as exc:
        raise _retry_after(ctx, exc) from exc
    except (AccountNotReady, PermanentError) as exc:
        await _record_account_error(pc, account_id, exc)
        return None


async def _record_account_error(pc: ProcessContext, account_id: int, exc: Exception) -> None:
    log.error("account.error", account_id=account_id, error=type(exc).__name__, detail=str(exc)[:300])
    async with pc.db.session_scope() as session:
        integ = await accounts_repo.get_integration(session, account_id)
        if integ is not None:
            integ.last_error, integ.last_error_at = f"{type(exc).__name__}: {exc}"[:1000], utcnow()


# --- cron ----------------------------------------------------------------------------------------------------


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue work that PostgreSQL says is pending (covers a lost Redis or a killed worker)."""
    pc = process_context(ctx)
    async with pc.db.session_scope() as session:
        stale_events = await inbox_repo.accounts_with_stale_events(session, _ago(5))
        due = await outbox_repo.accounts_with_due_outbox(session)
        runs = await runs_repo.orphaned_runs(session, idle=fullsync.LEASE_SECONDS)
        untagged = await consent_repo.accounts_with_untagged_unsubscribes(session)
        noting = await activity_repo.accounts_with_pending_activity(session)
        writing = await crm_writes_repo.accounts_with_pending_writes(session)
        signing = await signups_repo.accounts_with_pending_signups(session)
        metrics.EVENTS_PENDING.set(await inbox_repo.count_pending_events(session))
        pending = await outbox_repo.outbox_counts(session, statuses=(OutboxStatus.PENDING,))
        metrics.OUTBOX_PENDING.set(sum(counts.get(OutboxStatus.PENDING, 0) for counts in pending.values()))
        for kind, dead in (await deadletters_repo.counts_all(session)).items():
            metrics.DEAD_LETTERS.labels(kind.value).set(dead)
        pruned = await inbox_repo.prune_events(session, _ago(7 * 86400))
    for account_id, source in stale_events:
        await enqueue.process_events(pc.queue, account_id, source)
    for account_id in due:
        await enqueue.flush_outbox(pc.queue, account_id, delay=0)
    for run in runs:
        orphaned_at = run.lease_expires_at or run.updated_at
        await enqueue.full_sync(pc.queue, run.account_id, run.id, sweep=True, orphaned_at=orphaned_at)
    for account_id in untagged:
        await enqueue.tag_unsubscribes(pc.queue, account_id)
    for account_id in noting:
        await enqueue.activity_notes(pc.queue, account_id, sweep=True)
    for account_id in writing:
        await enqueue.crm_writes(pc.queue, account_id)
    for account_id in signing:
        await enqueue.signup_contacts(pc.queue, account_id)
    summary = {"events": len(stale_events), "outbox": len(due), "runs": len(runs), "pruned": pruned}
    if any(summary.values()):
        log.info("sweep.requeued", **summary)
    return summary


def _ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


async def reconcile(ctx: dict[str, Any]) -> int:
    pc = process_context(ctx)
    async with pc.db.session_scope() as session:
        accounts = await accounts_repo.connected_account_ids(session)
    changed = 0
    for account_id in accounts:
        try:
            changed += await reconcile_account(pc, account_id)
            await ensure_kommo_webhooks(pc, account_id)
            await specs.refresh_mapped_users(pc, account_id)
            await enqueue.reconcile_two_way(pc.queue, account_id, tick=utcnow().strftime("%Y%m%d%H%M"))
        except Exception as exc:  # one account's trouble must not stop the others
            log.warning("reconcile.failed", account_id=account_id, error=repr(exc)[:300])
    return changed


async def campaigns_tick(ctx: dict[str, Any]) -> int:
    """One refresh job per connected account: each has its own job timeout, and one account's failure (or
    slowness) does not hold up the others."""
    pc = process_context(ctx)
    async with pc.db.session_scope() as session:
        accounts = await accounts_repo.connected_account_ids(session)
    tick = utcnow().strftime("%Y%m%d%H%M")
    for account_id in accounts:
        await enqueue.refresh_campaigns(pc.queue, account_id, tick=tick)
    return len(accounts)


async def refresh_tokens(ctx: dict[str, Any]) -> int:
    return await refresh_expiring_tokens(process_context(ctx))
