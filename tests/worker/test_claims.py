"""Job claims by script: each job starts once over several workers, never before it is due or while it runs,
and a poll's claims are in flight together (real Redis, real arq workers)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import func

from app.context import ProcessContext
from app.worker.claims import ClaimingWorker


def _worker(
    ctx: ProcessContext,
    queue: str,
    ran: Counter[str],
    cls: type[ClaimingWorker] = ClaimingWorker,
    **kwargs: Any,
) -> ClaimingWorker:
    async def record(job_ctx: dict[str, Any], key: str) -> None:
        ran[key] += 1
        await asyncio.sleep(0.001)

    return cls(
        functions=[func(record, name="record")],
        redis_pool=ctx.queue,
        queue_name=queue,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        keep_result=0,
        **kwargs,
    )


async def _enqueued(ctx: ProcessContext, count: int) -> tuple[str, list[str]]:
    """A fresh queue holding ``count`` due ``record`` jobs; its name and the jobs' keys."""
    queue = f"test-claims-{uuid.uuid4().hex[:8]}"
    keys = [f"j{i}" for i in range(count)]
    for key in keys:
        await ctx.queue.enqueue_job("record", key, _job_id=f"{queue}:{key}", _queue_name=queue)
    return queue, keys


async def _cleanup(ctx: ProcessContext, queue: str) -> None:
    await ctx.queue.delete(queue)


async def test_three_workers_run_each_job_exactly_once(ctx: ProcessContext) -> None:
    ran: Counter[str] = Counter()
    queue, keys = await _enqueued(ctx, 300)
    try:
        workers = [_worker(ctx, queue, ran, max_jobs=20) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*(w.main() for w in workers)), timeout=60)
        assert ran == Counter(keys)  # every job, each once
        assert sum(w.jobs_complete for w in workers) == len(keys)
        assert await ctx.queue.zcard(queue) == 0
    finally:
        await _cleanup(ctx, queue)


async def test_a_claim_takes_only_a_queued_due_job_not_in_progress(ctx: ProcessContext) -> None:
    queue = f"test-claims-{uuid.uuid4().hex[:8]}"
    worker = _worker(ctx, queue, Counter())
    try:
        now = timestamp_ms()
        await ctx.queue.enqueue_job("record", "due", _job_id=f"{queue}:due", _queue_name=queue)
        await ctx.queue.enqueue_job(
            "record", "later", _job_id=f"{queue}:later", _queue_name=queue, _defer_by=60
        )
        await ctx.queue.enqueue_job("record", "busy", _job_id=f"{queue}:busy", _queue_name=queue)
        await ctx.queue.set(in_progress_key_prefix + f"{queue}:busy", b"1", px=60_000)

        now = timestamp_ms()
        score = await worker._claim(f"{queue}:due", now)
        assert score == int(await ctx.queue.zscore(queue, f"{queue}:due") or 0) > 0
        ttl = await ctx.queue.pttl(in_progress_key_prefix + f"{queue}:due")
        assert 0 < ttl <= worker.in_progress_timeout_s * 1000  # marked for arq's own in-progress time
        assert await worker._claim(f"{queue}:due", now) == 0  # now in progress: nobody claims it again
        assert await worker._claim(f"{queue}:later", now) == 0  # not due yet
        assert await worker._claim(f"{queue}:busy", now) == 0  # another worker runs it
        assert await worker._claim(f"{queue}:gone", now) == 0  # no longer queued
        assert not await ctx.queue.exists(in_progress_key_prefix + f"{queue}:later")
    finally:
        await ctx.queue.delete(
            queue, *(in_progress_key_prefix + f"{queue}:{k}" for k in ("due", "busy", "later"))
        )


class _Watching(ClaimingWorker):
    in_flight = 0
    most_in_flight = 0

    async def _claim(self, job_id: str, now: int) -> int:
        type(self).in_flight += 1
        type(self).most_in_flight = max(type(self).most_in_flight, type(self).in_flight)
        try:
            return await super()._claim(job_id, now)
        finally:
            type(self).in_flight -= 1


async def test_a_polls_claims_are_in_flight_together(ctx: ProcessContext) -> None:
    """arq claimed job after job, four round trips each: a busy worker could not start jobs as fast as they
    came due. A poll's claims now go out together."""
    ran: Counter[str] = Counter()
    queue, keys = await _enqueued(ctx, 25)
    try:
        worker = _worker(ctx, queue, ran, _Watching, max_jobs=50)
        await asyncio.wait_for(worker.main(), timeout=30)
        assert ran == Counter(keys)
        assert _Watching.most_in_flight == len(keys)
    finally:
        await _cleanup(ctx, queue)


async def test_jobs_running_elsewhere_do_not_hold_back_the_jobs_behind_them(ctx: ProcessContext) -> None:
    """A killed worker's jobs stay "in progress" at the head of the queue for a while; a worker with one slot
    goes past them to the jobs it can take (it once stopped at the first, and took nothing for minutes)."""
    queue = f"test-claims-{uuid.uuid4().hex[:8]}"
    ran: Counter[str] = Counter()
    stuck = [f"{queue}:stuck{i}" for i in range(3)]
    try:
        for i, job_id in enumerate(stuck):
            await ctx.queue.enqueue_job("record", f"stuck{i}", _job_id=job_id, _queue_name=queue)
            await ctx.queue.set(in_progress_key_prefix + job_id, b"1", px=60_000)
        keys = [f"j{i}" for i in range(4)]
        for key in keys:
            await ctx.queue.enqueue_job("record", key, _job_id=f"{queue}:{key}", _queue_name=queue)
        worker = _worker(ctx, queue, ran, max_jobs=1)
        # A burst worker ends when its queue is empty; the stuck jobs stay queued, so it runs until told.
        main = asyncio.create_task(worker.main())
        for _ in range(200):
            if sum(ran.values()) == len(keys):
                break
            await asyncio.sleep(0.05)
        main.cancel()
        await asyncio.gather(main, return_exceptions=True)
        assert ran == Counter(keys)  # each job it could take, once; none of those running elsewhere
    finally:
        await ctx.queue.delete(queue, *(in_progress_key_prefix + job_id for job_id in stuck))


class _SlowRound(ClaimingWorker):
    """Each claim is answered by Redis at once and reaches the worker 0.5 s later (a busy event loop)."""

    async def _claim(self, job_id: str, now: int) -> int:
        claimed = await super()._claim(job_id, now)
        await asyncio.sleep(0.5)
        return claimed


async def test_a_worker_stopped_mid_claim_hands_its_claims_back(ctx: ProcessContext) -> None:
    """Stopped while its claims were in flight, a worker must not leave those jobs "in progress" for arq's whole
    in-progress time (job timeout + 10 s) with nobody running them: another worker takes them at once."""
    ran: Counter[str] = Counter()
    queue, keys = await _enqueued(ctx, 6)
    try:
        stopping = _worker(ctx, queue, ran, _SlowRound, max_jobs=10)
        round_ = asyncio.create_task(stopping.start_jobs([f"{queue}:{k}".encode() for k in keys]))
        await asyncio.sleep(0.2)  # the scripts have run; their answers are on the way
        round_.cancel()
        with pytest.raises(asyncio.CancelledError):
            await round_
        assert stopping.job_counter == 0  # every slot given back
        assert not stopping.tasks
        for key in keys:
            assert not await ctx.queue.exists(in_progress_key_prefix + f"{queue}:{key}")
        other = _worker(ctx, queue, ran, max_jobs=10)
        await asyncio.wait_for(other.main(), timeout=20)
        assert ran == Counter(keys)
    finally:
        await _cleanup(ctx, queue)
