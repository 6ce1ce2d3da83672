"""The workers of one process, run and stopped as one: the live worker (``contactsync:queue``: live changes and
the cron jobs) and the bulk worker (its ``:bulk`` queue: full syncs and re-derivations, activity notes,
campaign totals, reconciles), or one of them (``WORKER_ROLE``).

Two queues, not one: arq reads the oldest due ids of a queue, so on one queue a crowd of bulk jobs waiting for
their places (per account, ``app.worker.claims``) stood in front of the live jobs behind them. Each arq worker
serves one queue (it retries and finishes a job in its own), so a process runs one worker per queue.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Any

import structlog

from app.worker.claims import ClaimingWorker
from app.worker.stopping import outlast_cancels

log = structlog.get_logger(__name__)

# How long a stopped set waits for its workers' polls to end before it gives up on them (a worker that
# never ends must not hang the process's stop).
STOP_SECONDS = 30.0


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = 0.5) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again while it goes on.

    One cancellation can be lost: on Python 3.11, ``asyncio.wait_for`` returns its inner result instead of
    raising when the cancellation arrives just as the inner operation completes, and redis-py wraps every
    command it sends in one. arq's loop then simply polls on, and a worker told to stop (SIGTERM,
    ``serve --embedded`` ending) kept running until it was killed."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled():
        task.exception()  # retrieved: it ended on its own, and the caller is stopping anyway


class WorkerSet:
    """arq workers sharing one process context, with the part of arq's ``Worker`` interface the service uses."""

    def __init__(self, workers: Sequence[ClaimingWorker]) -> None:
        if not workers:
            raise ValueError("a worker set needs at least one worker")
        self.workers = list(workers)

    @property
    def jobs_complete(self) -> int:
        return sum(w.jobs_complete for w in self.workers)

    @property
    def jobs_failed(self) -> int:
        return sum(w.jobs_failed for w in self.workers)

    @property
    def in_progress_timeout_s(self) -> float:
        return max(w.in_progress_timeout_s for w in self.workers)

    async def main(self) -> None:
        """Run every worker until all have ended (burst mode: each when its queue is empty); the first failure
        stops the others and is raised (a lost Redis: the caller rebuilds the set)."""
        tasks = [asyncio.create_task(w.main()) for w in self.workers]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is not None:
                        raise exc
        finally:
            # Each cancelled until it has ended (a lost cancel would leave half a set polling unsupervised), and
            # the set ends only after all have: whoever stops it may cancel it again meanwhile (cancel_and_wait
            # does, every half second), and a worker still polling when the shared Redis pool is closed after
            # the set fails with nobody to hear it.
            stopping = asyncio.ensure_future(asyncio.gather(*(cancel_and_wait(task) for task in tasks)))
            if not await outlast_cancels(stopping, STOP_SECONDS):
                log.warning("worker.stop_overdue", seconds=STOP_SECONDS)

    async def close(self) -> None:
        """Stop every worker's jobs first, then close each (the first error is raised after all): arq's close
        ends by closing the Redis pool, which the workers share, and must not cut the jobs of one still
        running."""
        for worker in self.workers:
            worker.handle_sig(signal.SIGUSR1)  # what arq's own close does first: cancel the running jobs
        jobs = [task for worker in self.workers for task in worker.tasks.values()]
        await asyncio.gather(*jobs, return_exceptions=True)
        first: BaseException | None = None
        for worker in self.workers:
            try:
                await worker.close()
            except BaseException as exc:  # re-raised below, after the others closed
                first = first or exc
        if first is not None:
            raise first
