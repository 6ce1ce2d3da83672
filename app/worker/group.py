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

from app.worker.claims import ClaimingWorker


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
            # Cancelled again until each has ended: on Python 3.11 one cancel can be lost (a Redis command
            # finishing as it arrives), and a worker left polling would keep half a set running unsupervised.
            while not all(task.done() for task in tasks):
                for task in tasks:
                    if not task.done():
                        task.cancel()
                await asyncio.wait(tasks, timeout=0.5)

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
