"""Worker construction and the supervised run loop.

arq's defaults suit slow jobs; ours are I/O-bound and must start fast (a change should reach the email
platform within about a second, docs/benchmarks.md): poll_delay ≤ 0.1 s, max_jobs ≥ 50, keep_result 0 (a kept
result blocks re-enqueueing the same job id), job_timeout ≈ 60 s so a killed worker's job re-runs within about
a minute (arq: job timeout + 10 s). A full-sync run does not wait for that: its slice's lease expires within
seconds and the sweeper hands it to a new job (docs/recovery.md). An arq worker exits when Redis restarts, so
``run_worker_forever`` rebuilds it with backoff; pending work is re-found from PostgreSQL by the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from arq import Retry
from arq.cron import CronJob, cron
from arq.worker import Function, func
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.connectors.ratelimit import bulk_work
from app.context import ProcessContext, build_context
from app.db.schema import check_schema_current
from app.db.session import is_timeout
from app.logging import configure_logging
from app.queue import BULK_HEALTH_KEY, BULK_QUEUE_NAME, HEALTH_KEY, QUEUE_NAME, create_queue
from app.retry import backoff
from app.worker import tasks
from app.worker.claims import ClaimingWorker
from app.worker.group import WorkerSet, cancel_and_wait

log = structlog.get_logger(__name__)

TaskFn = Callable[..., Coroutine[Any, Any, Any]]


def _reconnecting(fn: TaskFn) -> TaskFn:
    """The worker's pool does not ping each connection before use (a round trip per transaction, most of
    a small job's cost), so the first statement on a connection that a PostgreSQL restart broke fails.
    SQLAlchemy then recycles the whole pool; the job runs again a moment later.

    A database that does not answer in time (connect, statement or pool-wait deadline, see
    ``app.db.session.DbTimeouts``) fails the job at once too, and it runs again with a growing delay: a job
    never waits out a whole outage, and many jobs do not hammer a database that is struggling."""

    @functools.wraps(fn)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(ctx, *args, **kwargs)
        except Exception as exc:
            invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
            if not invalidated and not is_timeout(exc):
                raise
            attempt = int(ctx.get("job_try", 1))
            delay = backoff(attempt, base=0.5, cap=60.0, jitter=0.5)  # 0.5-1 s, 1-2 s … 30-60 s
            log.warning(
                "job.db_unavailable",
                function=fn.__name__,
                error=type(getattr(exc, "orig", None) or exc).__name__,
                retry_in=round(delay, 2),
            )
            raise Retry(defer=delay) from exc

    return run


def _bulk(fn: TaskFn) -> TaskFn:
    """Bulk work: its provider calls wait behind every live caller's (``app.connectors.ratelimit``)."""

    @functools.wraps(fn)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        with bulk_work():
            return await fn(ctx, *args, **kwargs)

    return run


def functions(settings: Settings) -> list[Function]:
    # Live: a contact's change and what answers it (events, pushes of live rows, consent tags, two-way
    # writes, signups). Bulk: full syncs and re-derivations, activity notes, campaign totals, the export
    # reconcile. A flush job decides per batch (a batch with any live row is live).
    return [
        func(tasks.ping, name="ping"),
        func(_reconnecting(tasks.process_events), name="process_events"),
        func(_reconnecting(tasks.flush_outbox), name="flush_outbox"),
        func(_reconnecting(_bulk(tasks.full_sync)), name="full_sync"),
        func(_reconnecting(tasks.tag_unsubscribes), name="tag_unsubscribes"),
        func(_reconnecting(_bulk(tasks.activity_notes)), name="activity_notes"),
        func(_reconnecting(tasks.crm_writes), name="crm_writes"),
        func(_reconnecting(_bulk(tasks.reconcile_two_way)), name="reconcile_two_way"),
        func(_reconnecting(tasks.signup_contacts), name="signup_contacts"),
        func(_reconnecting(_bulk(tasks.refresh_campaigns)), name="refresh_campaigns"),
    ]


def cron_jobs(settings: Settings) -> list[CronJob]:
    # Ticks missed while no worker ran are not replayed by arq, so each job looks back instead of
    # assuming the previous tick ran; `unique` makes one worker run each tick.
    # Every timeout stays at the worker's job_timeout: arq keeps a killed worker's job "in progress" for the
    # largest timeout + 10 s before re-running it, so one long timeout would stall recovery for everything.
    t = settings.worker_job_timeout
    return [
        cron(tasks.sweep, name="sweep", second=set(range(0, 60, 10)), run_at_startup=True, timeout=t),
        cron(_bulk(tasks.reconcile), name="reconcile", minute=set(range(0, 60, 5)), second={30}, timeout=t),
        cron(tasks.refresh_tokens, name="refresh_tokens", minute={7, 37}, second={15}, timeout=t),
        cron(tasks.campaigns_tick, name="campaigns", minute=set(range(3, 60, 10)), second={45}, timeout=t),
    ]


async def _on_job_start(ctx: dict[str, Any]) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), job_try=ctx.get("job_try"))


async def _on_job_end(ctx: dict[str, Any]) -> None:
    structlog.contextvars.clear_contextvars()


def build_worker(
    pc: ProcessContext,
    *,
    burst: bool = False,
    handle_signals: bool = False,
    max_burst_jobs: int = -1,
    role: str | None = None,
) -> WorkerSet:
    """The process's arq workers bound to its context (shared engine, HTTP clients and queue pool): the live
    worker, the bulk worker, or both (``role``, default the ``WORKER_ROLE`` setting; ``app.worker.group``).
    Signals are the caller's (``run_worker_forever`` stops the set on SIGTERM): arq's own handler would be
    installed once per worker, the last replacing the others."""
    if handle_signals:
        raise ValueError("a worker set does not install signal handlers: stop it from the caller")
    s = pc.settings
    role = role or s.worker_role

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["process"] = pc

    def worker(queue_name: str, **kwargs: Any) -> ClaimingWorker:
        return ClaimingWorker(
            functions=functions(s),
            redis_pool=pc.queue,
            queue_name=queue_name,
            on_startup=on_startup,
            on_job_start=_on_job_start,
            on_job_end=_on_job_end,
            burst=burst,
            max_burst_jobs=max_burst_jobs,
            handle_signals=handle_signals,
            account_bulk_jobs=s.account_max_bulk_jobs,
            poll_delay=s.worker_poll_delay,
            job_timeout=s.worker_job_timeout,
            keep_result=0,
            max_tries=25,
            health_check_interval=15,
            **kwargs,
        )

    workers: list[ClaimingWorker] = []
    if role in ("all", "live"):
        # Bulk ids in the live queue (enqueued by a release before the bulk queue) still run here, capped.
        workers.append(
            worker(
                QUEUE_NAME,
                cron_jobs=cron_jobs(s),
                max_jobs=s.worker_max_jobs,
                max_bulk_jobs=s.worker_max_bulk_jobs,
                health_check_key=HEALTH_KEY,
            )
        )
    if role in ("all", "bulk"):
        workers.append(
            worker(
                BULK_QUEUE_NAME,
                max_jobs=s.worker_max_jobs if role == "bulk" else s.worker_max_bulk_jobs,
                health_check_key=BULK_HEALTH_KEY,
            )
        )
    return WorkerSet(workers)


async def run_worker_forever(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the worker; when Redis goes away, rebuild it with backoff instead of exiting."""
    configure_logging(fmt=settings.effective_log_format, level=settings.log_level)
    pc = await build_context(settings, pre_ping=False)
    await check_schema_current(pc.db.engine)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    log.info("worker.started", worker_id=worker_id, role=settings.worker_role)
    stop = stop or asyncio.Event()
    losses = 0
    try:
        while not stop.is_set():
            worker = build_worker(pc, handle_signals=False)
            run = asyncio.create_task(worker.main())
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                await cancel_and_wait(run)
                await _close_stopped(worker)
                break
            stopper.cancel()
            exc = run.exception()
            with contextlib.suppress(Exception):
                await worker.close()
            if exc is None:
                break
            # arq surfaces a dropped connection as ConnectionError, TimeoutError or WatchError (inside start_jobs):
            # any Redis error means "rebuild the worker", never "exit".
            if not isinstance(exc, RedisError | ConnectionError | OSError):
                raise exc
            losses += 1
            delay = backoff(losses, base=0.5, cap=10.0, jitter=0.5)  # 0.5-1 s, 1-2 s … 5-10 s
            log.warning("worker.redis_lost", error=repr(exc), retry_in=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            await pc.queue.aclose()
            pc.queue = await _reconnect(settings, stop)
    finally:
        await pc.close()
        log.info("worker.stopped", worker_id=worker_id)


async def _close_stopped(worker: Any) -> None:
    """Close a worker we stopped. arq's close awaits the jobs it cancelled, and one of them may re-raise its
    cancellation there: that is the job's, not ours (a stop is not a crash, and must not print a traceback
    and exit non-zero), unless this task itself is being cancelled."""
    try:
        await worker.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.info("worker.cancelled_job_at_close")


async def _reconnect(settings: Settings, stop: asyncio.Event) -> Any:
    for attempt in itertools.count():
        delay = backoff(attempt, base=0.5, cap=10.0, jitter=0.0)  # 0.5 s, 1 s, 2 s … 10 s
        try:
            queue = await create_queue(settings.require_redis_url())
            await queue.ping()
            return queue
        except Exception as exc:
            if stop.is_set():
                raise
            log.warning("worker.redis_unavailable", error=repr(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
