"""Typed enqueue helpers. Jobs carry ids only; every input lives in PostgreSQL.

Job ids are unique per trigger, so no enqueue is swallowed by an existing job key, except where that is the
point: jobs coalesced into windows (``_window``: one id per window, deferred to its end) and the sweeper's
re-enqueues of bulk work (one fixed id, ``_SWEEP``). The jobs themselves coalesce too (each drains everything
pending for its account under a per-account lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from datetime import datetime
from typing import Any

import structlog
from arq.connections import ArqRedis

from app.db.states import EventSource
from app.queue import BULK_PREFIX, bulk_queue

log = structlog.get_logger(__name__)

# Coalescing window for pushes of live changes: changes arriving within one share one importContacts call.
# ≤ 10 calls per 1,000 changes at 200 changes/s needs windows of ≥ 0.5 s; 0.55 s leaves room for the part-
# filled windows at the start and end of a stream. A change waits at most one window.
FLUSH_WINDOW_SECONDS = 0.55
# Coalescing window for wake-ups sent by webhook intake (see WakeUps): at most 10 jobs/s per account and
# process, whatever the webhook rate; each job drains everything pending.
WAKE_WINDOW_SECONDS = 0.1
# Email activity is not live data: its jobs coalesce into longer windows so that Kommo's calls go out full
# (250 notes, or a tag PATCH of many contacts) rather than one per events round. Kommo allows the whole
# integration 7 calls a second, live changes' reads included.
NOTES_WINDOW_SECONDS = 1.0
TAGS_WINDOW_SECONDS = 2.0


async def _enqueue(
    queue: ArqRedis, function: str, *args: Any, job_id: str, defer: float | None = None
) -> None:
    # A bulk job waits in the bulk queue beside the pool's own (app.worker.group); None: the pool's own.
    name = bulk_queue(queue.default_queue_name) if job_id.startswith(BULK_PREFIX) else None
    try:
        await queue.enqueue_job(function, *args, _job_id=job_id, _defer_by=defer, _queue_name=name)
    except Exception as exc:
        # Redis is only the wake-up signal: the sweeper re-finds this work in PostgreSQL.
        log.warning("enqueue.failed", function=function, error=repr(exc))


def _uid(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


def _window(prefix: str, seconds: float, *, after: float = 0.0) -> tuple[str, float]:
    """The id and delay of a job coalesced into windows of ``seconds``: every ask within one window (``after``
    seconds from now at the earliest) names the same id, deferred to the window's end. The id repeats within a
    window, so arq keeps one job; the worker keeps no results, so the next window's id is free again."""
    now = time.time()
    window = math.floor((now + max(0.0, after)) / seconds) + 1
    return f"{prefix}:w{window}", max(0.0, window * seconds - now)


async def process_events(queue: ArqRedis, account_id: int, source: str = EventSource.KOMMO) -> None:
    await _enqueue(queue, "process_events", account_id, source, job_id=_uid(f"events:{source}:{account_id}"))


def _recent_key(account_id: int) -> str:
    return f"contactsync:flush-recent:{account_id}"


async def flush_outbox(queue: ArqRedis, account_id: int, *, delay: float | None = None) -> None:
    """Push the account's pending outbox rows.

    Without ``delay`` (live changes), pushes coalesce into windows of ``FLUSH_WINDOW_SECONDS``: every change
    of one window asks for the same job id, deferred to the window's end, so a steady stream costs at most
    one importContacts call per window and account however many changes it carries (a change waits at most
    one window). The first change after a quiet window (no live change of the account for a whole window)
    is pushed at once instead: a sparse account's change has nothing to wait for, and would otherwise wait a
    whole window every time; the changes right behind it coalesce into the window as before. With ``delay``
    (a full sync's batches, retries) the job is always sent, after that delay.
    """
    if delay is None:
        if await _after_quiet(queue, account_id):
            await _enqueue(queue, "flush_outbox", account_id, job_id=_uid(f"flush:{account_id}:lead"))
            return
        job_id, defer = _window(f"flush:{account_id}", FLUSH_WINDOW_SECONDS)
        await _enqueue(queue, "flush_outbox", account_id, job_id=job_id, defer=defer)
        return
    await _enqueue(queue, "flush_outbox", account_id, job_id=_uid(f"flush:{account_id}"), defer=delay)


async def _after_quiet(queue: ArqRedis, account_id: int) -> bool:
    """True for the first live change after a quiet window; every live change restarts the window."""
    try:
        previous = await queue.set(
            _recent_key(account_id), b"1", px=int(FLUSH_WINDOW_SECONDS * 1000), get=True
        )
    except Exception:
        return False  # the window's job below logs the failure; the sweeper re-finds the rows
    return previous is None


def _bulk_id(account_id: int, rest: str) -> str:
    """A bulk job's id: the worker caps running bulk jobs per account by this prefix (app.worker.claims)."""
    return f"{BULK_PREFIX}{account_id}:{rest}"


# The sweeper's re-enqueues of bulk work take one fixed id per account (or run): arq keeps one job per id
# queued or running, so a sweep every 10 s adds nothing while the last one still waits. With unique ids, an
# account whose bulk places stay taken (a long sync beside a long notes backlog) gathered six jobs a minute,
# and a crowd of such accounts could push live jobs out of the queue reads a poll makes (app.worker.claims).
_SWEEP = "sweep"


async def full_sync(
    queue: ArqRedis,
    account_id: int,
    run_id: str,
    *,
    delay: float | None = None,
    sweep: bool = False,
    orphaned_at: datetime | None = None,
) -> None:
    """A slice of the run (a full sync or a re-derivation) of ``account_id``. The job id is the slice's lease
    owner on the run (64 characters at most): the run id's first 8 and a unique suffix, or for the sweeper's
    re-enqueue of an orphaned run a fixed one per orphaning (``orphaned_at``: when its last lease lapsed; see
    ``_SWEEP``; a retried job keeps its lease the same way). One id per orphaning, not per run: a slice the
    sweeper started and that was then killed keeps its id "in progress" at arq for the job timeout + 10 s, and
    the next orphaning's re-enqueue under the same id would be dropped until then."""
    base = _bulk_id(account_id, f"sync:{run_id[:8]}")
    stamp = f":{int(orphaned_at.timestamp())}" if orphaned_at is not None else ""
    job_id = f"{base}:{_SWEEP}{stamp}" if sweep else _uid(base)
    await _enqueue(queue, "full_sync", run_id, job_id=job_id, defer=delay)


async def tag_unsubscribes(queue: ArqRedis, account_id: int) -> None:
    """Tags take a window (``TAGS_WINDOW_SECONDS``): a campaign's bounces and complaints arrive one events round
    after another, and a job per round sent a Kommo PATCH per stopped address."""
    job_id, defer = _window(f"tag:{account_id}", TAGS_WINDOW_SECONDS)
    await _enqueue(queue, "tag_unsubscribes", account_id, job_id=job_id, defer=defer)


class WakeUps:
    """Coalesces wake-up jobs: a burst of webhooks for one account sends one job per window, not one each.

    Webhook intake commits the event first and pokes afterwards, so a poke lost with the process (or with
    Redis) only delays the work until the sweeper finds the pending rows. Sending happens off the request
    path: an answered webhook never waits on Redis.
    """

    def __init__(self, queue: ArqRedis, *, window: float = WAKE_WINDOW_SECONDS) -> None:
        self._queue = queue
        self._window = window
        self._pending: dict[tuple[str, tuple[Any, ...]], None] = {}
        self._sender: asyncio.Task[None] | None = None

    def poke(self, function: str, *args: Any) -> None:
        """Ask for ``function(*args)`` to run soon; repeated pokes within the window send one job."""
        self._pending[(function, args)] = None
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    async def _send_loop(self) -> None:
        # Ends as soon as nothing is pending; the next poke starts a new loop.
        while self._pending:
            await asyncio.sleep(self._window)
            await self._send_pending()

    async def _send_pending(self) -> None:
        batch, self._pending = self._pending, {}
        for function, args in batch:
            await _enqueue(self._queue, function, *args, job_id=_uid(":".join([function, *map(str, args)])))

    async def close(self) -> None:
        """Send what is pending now (shutdown): the sweeper would find it anyway, this is just sooner."""
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        await self._send_pending()


async def activity_notes(queue: ArqRedis, account_id: int, *, sweep: bool = False) -> None:
    """A notes job now: a job's continuation (it stopped with work left), or the sweeper's (its fixed id)."""
    base = _bulk_id(account_id, "notes")
    await _enqueue(queue, "activity_notes", account_id, job_id=f"{base}:{_SWEEP}" if sweep else _uid(base))


async def activity_notes_window(queue: ArqRedis, account_id: int, *, after: float = 0.0) -> None:
    """A notes job at the end of a ``NOTES_WINDOW_SECONDS`` window, ``after`` seconds from now at the earliest:
    new activity (each events round asks; one job per window) or a part-filled call held back to fill."""
    job_id, defer = _window(_bulk_id(account_id, "notes"), NOTES_WINDOW_SECONDS, after=after)
    await _enqueue(queue, "activity_notes", account_id, job_id=job_id, defer=defer)


async def signup_contacts(queue: ArqRedis, account_id: int) -> None:
    await _enqueue(queue, "signup_contacts", account_id, job_id=_uid(f"signups:{account_id}"))


async def refresh_campaigns(queue: ArqRedis, account_id: int, *, tick: str | None = None) -> None:
    """Read the account's campaigns and their totals; with ``tick`` (the cron's), one job per tick."""
    job_id = _bulk_id(account_id, f"campaigns:{tick}") if tick else _uid(_bulk_id(account_id, "campaigns"))
    await _enqueue(queue, "refresh_campaigns", account_id, job_id=job_id)


async def crm_writes(queue: ArqRedis, account_id: int) -> None:
    await _enqueue(queue, "crm_writes", account_id, job_id=_uid(f"crmw:{account_id}"))


async def reconcile_two_way(queue: ArqRedis, account_id: int, *, tick: str) -> None:
    """The export reconcile of two-way fields: one job per account and cron tick."""
    await _enqueue(queue, "reconcile_two_way", account_id, job_id=_bulk_id(account_id, f"twoway:{tick}"))
