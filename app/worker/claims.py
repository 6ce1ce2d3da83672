"""Job claims in one Redis round trip each, all of a poll's claims at once.

arq claims a job with WATCH on its in-progress key, EXISTS, ZSCORE, then MULTI/PSETEX/EXEC: four round trips,
job after job, in the poll loop. On a busy worker each round trip also waits its turn on the event loop, so
starting one job took tens of milliseconds and jobs could not start as fast as they became due: with one
worker beside three big full syncs, live changes' jobs waited 1-7 s in the queue (p50 2.7 s) for a run of
10-40 ms (``bench/scaleout.py``, docs/benchmarks.md §9). Several workers repeat each claim against each other
(the WATCH that fails), so Redis traffic grew with every worker added.

Here the same check-and-mark is one script (atomic in Redis, so two workers never both start a job), and a
poll's claims are sent together. What a claim checks is arq's: the job is not in progress, still queued, and
due by this worker's clock; it marks the job in progress for arq's own in-progress timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

# KEYS: the job's in-progress key, the queue. ARGV: job id, now (ms), in-progress lifetime (ms).
# Returns the job's score when claimed, else 0 (running elsewhere, no longer queued, or not due yet).
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
return tonumber(score)
"""


class ClaimingWorker(Worker):
    """arq's Worker with ``start_jobs`` claiming by script, the poll's claims in flight together."""

    _claim_script: Any = None  # registered on the first claim (the pool may be made at start-up)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        waiting = [job_id.decode() for job_id in reversed(job_ids)]  # popped from the end: oldest first
        failure: BaseException | None = None
        # Rounds of claims, each filling the free slots, until they are full or the ids run out: a job that
        # is not ours (running elsewhere: a killed worker's stays "in progress" for a while) must not keep
        # the jobs behind it waiting, as in arq, which goes on to the next id.
        while waiting and failure is None and self.allow_pick_jobs:
            taken: list[str] = []
            while waiting and self.job_counter < self.max_jobs:
                await self.sem.acquire()
                self.job_counter += 1
                taken.append(waiting.pop())
            if not taken:
                return
            claims = await self._claim_round(taken)
            for job_id, claim in zip(taken, claims, strict=True):
                if isinstance(claim, BaseException) or not claim:
                    # Not ours (or Redis failed): give the slot back, as arq does.
                    self.job_counter -= 1
                    self.sem.release()
                    if isinstance(claim, BaseException):
                        failure = failure or claim
                    continue
                task = asyncio.get_running_loop().create_task(self.run_job(job_id, int(claim)))
                task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
                self.tasks[job_id] = task
        if failure is not None:
            raise failure  # the poll loop's own handling (a Redis that went away stops the worker)

    async def _claim_round(self, taken: list[str]) -> list[int | BaseException]:
        now = timestamp_ms()
        claiming = asyncio.ensure_future(
            asyncio.gather(*(self._claim(job_id, now) for job_id in taken), return_exceptions=True)
        )
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # Stopped mid-round (shutdown, a deploy): the claims Redis already made would keep their jobs "in
            # progress" for arq's whole in-progress time (job timeout + 10 s) with nobody running them. Hand
            # them back, then stop as asked.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(2.0):
                    results = await claiming
                    ours = [j for j, r in zip(taken, results, strict=True) if isinstance(r, int) and r]
                    if ours:
                        await self.pool.delete(*(in_progress_key_prefix + job_id for job_id in ours))
            for _ in taken:
                self.job_counter -= 1
                self.sem.release()
            raise

    async def _claim(self, job_id: str, now: int) -> int:
        script = self._claim_script
        if script is None:
            script = self._claim_script = self.pool.register_script(_CLAIM)
        keys = [in_progress_key_prefix + job_id, self.queue_name]
        args = [job_id, now, int(self.in_progress_timeout_s * 1000)]
        return int(await script(keys=keys, args=args))
