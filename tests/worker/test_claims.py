"""Job claims by script: each job starts once over several workers, never before it is due or while it runs,
and a poll's claims are in flight together (real Redis, real arq workers)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import func

from app.context import ProcessContext
from app.worker.claims import ClaimingWorker, bulk_running_key
from app.worker.group import cancel_and_wait


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

    return _burst_worker(ctx, queue, func(record, name="record"), cls, **kwargs)


def _burst_worker(
    ctx: ProcessContext, queue: str, function: Any, cls: type[ClaimingWorker], **kwargs: Any
) -> ClaimingWorker:
    """A worker of ``cls`` running ``function``'s jobs of ``queue`` until the queue is empty."""
    return cls(
        functions=[function],
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
        # Cancelled until it stops: one cancellation can be lost on Python 3.11, and the worker then polled on
        # until the stuck jobs' in-progress marks lapsed (60 s) and ran them too.
        await cancel_and_wait(main)
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


async def test_claims_are_handed_back_through_a_stop_that_cancels_again_and_again(
    ctx: ProcessContext,
) -> None:
    """A stop cancels again every half second (``cancel_and_wait``); those repeats land in the hand-back, which
    must still finish, or the jobs stay "in progress" with nobody running them."""
    ran: Counter[str] = Counter()
    queue, keys = await _enqueued(ctx, 6)
    try:
        stopping = _worker(ctx, queue, ran, _SlowRound, max_jobs=10)
        round_ = asyncio.create_task(stopping.start_jobs([f"{queue}:{k}".encode() for k in keys]))
        await asyncio.sleep(0.2)  # the scripts have run; their answers are on the way
        await asyncio.wait_for(cancel_and_wait(round_, every=0.05), timeout=10)
        assert round_.cancelled()
        assert stopping.job_counter == 0
        for key in keys:
            assert not await ctx.queue.exists(in_progress_key_prefix + f"{queue}:{key}")
    finally:
        await _cleanup(ctx, queue)


# --- bulk caps -------------------------------------------------------------------------------------------


class _Timeline:
    """When each job ran (monotonic start and end) and how many ran at once, per account and in all."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}
        self.running: Counter[str] = Counter()
        self.most: Counter[str] = Counter()

    def function(self, seconds: float) -> Any:
        async def hold(job_ctx: dict[str, Any], group: str, key: str, hold_for: float | None = None) -> None:
            start = time.monotonic()
            self.running[group] += 1
            self.most[group] = max(self.most[group], self.running[group])
            try:
                await asyncio.sleep(seconds if hold_for is None else hold_for)
            finally:
                self.running[group] -= 1
                self.spans[key] = (start, time.monotonic())

        return func(hold, name="hold")


def _bulk_worker(ctx: ProcessContext, queue: str, timeline: _Timeline, seconds: float, **kwargs: Any) -> Any:
    cls = kwargs.pop("cls", ClaimingWorker)
    return _burst_worker(ctx, queue, timeline.function(seconds), cls, **kwargs)


async def _enqueue_hold(
    ctx: ProcessContext, queue: str, job_id: str, group: str, hold_for: float | None = None
) -> None:
    await ctx.queue.enqueue_job("hold", group, job_id, hold_for, _job_id=job_id, _queue_name=queue)


async def test_an_accounts_bulk_jobs_run_at_most_its_cap_across_workers(ctx: ProcessContext) -> None:
    """Two workers with room for everything: each account still runs two bulk jobs at a time, while the other
    account's go on beside them and live jobs are not capped."""
    queue = f"test-claims-{uuid.uuid4().hex[:8]}"
    a, b = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    timeline = _Timeline()
    try:
        for account in (a, b):
            for i in range(6):
                await _enqueue_hold(ctx, queue, f"bulk:{account}:{queue}:{i}", account)
        for i in range(4):
            await _enqueue_hold(ctx, queue, f"{queue}:live{i}", "live")
        workers = [
            _bulk_worker(ctx, queue, timeline, 0.3, max_jobs=20, account_bulk_jobs=2) for _ in range(2)
        ]
        await asyncio.wait_for(asyncio.gather(*(w.main() for w in workers)), timeout=30)
        assert len(timeline.spans) == 16  # every job ran
        assert timeline.most[a] == timeline.most[b] == 2  # the cap reached, never passed
        assert timeline.most["live"] == 4  # live jobs are not capped
        # The accounts ran side by side: b's first jobs began before a's first jobs ended.
        assert min(timeline.spans[f"bulk:{b}:{queue}:{i}"][0] for i in range(6)) < min(
            timeline.spans[f"bulk:{a}:{queue}:{i}"][1] for i in range(6)
        )
        for account in (a, b):  # each finished job gave its place back
            assert await ctx.queue.zcard(bulk_running_key(account)) == 0
    finally:
        await ctx.queue.delete(queue, bulk_running_key(a), bulk_running_key(b))


async def test_a_worker_keeps_slots_for_live_jobs_behind_bulk_ones(ctx: ProcessContext) -> None:
    """Six accounts' bulk jobs ahead of three live jobs in the queue, a worker of five slots with two for bulk
    work: the live jobs start at once (arq would fill all five slots with bulk jobs first)."""
    queue = f"test-claims-{uuid.uuid4().hex[:8]}"
    accounts = [f"t{uuid.uuid4().hex[:8]}" for _ in range(6)]
    timeline = _Timeline()
    try:
        for account in accounts:
            await _enqueue_hold(ctx, queue, f"bulk:{account}:{queue}", "bulk")
        for i in range(3):
            await _enqueue_hold(ctx, queue, f"{queue}:live{i}", "live")
        worker = _bulk_worker(ctx, queue, timeline, 0.4, max_jobs=5, max_bulk_jobs=2)
        await asyncio.wait_for(worker.main(), timeout=30)
        assert len(timeline.spans) == 9
        assert timeline.most["bulk"] == 2
        bulk_starts = sorted(timeline.spans[f"bulk:{a}:{queue}"][0] for a in accounts)
        live_starts = [timeline.spans[f"{queue}:live{i}"][0] for i in range(3)]
        assert max(live_starts) < bulk_starts[2]  # every live job began before a third bulk job could
    finally:
        await ctx.queue.delete(queue, *(bulk_running_key(a) for a in accounts))


async def test_a_killed_workers_places_lapse_and_a_running_jobs_place_is_renewed(ctx: ProcessContext) -> None:
    """A worker killed while running an account's bulk jobs leaves their places taken until their lease lapses,
    not for arq's in-progress time; a job that runs past the lease keeps its place by renewing it."""

    class _ShortLease(ClaimingWorker):
        bulk_lease_ms = 600

    queue = f"test-claims-{uuid.uuid4().hex[:8]}"
    account = f"t{uuid.uuid4().hex[:8]}"
    key = bulk_running_key(account)
    timeline = _Timeline()
    try:
        seconds, micros = await ctx.queue.time()
        now_ms = seconds * 1000 + micros // 1000
        await ctx.queue.zadd(
            key, {"killed-worker-job": now_ms + 600}
        )  # the cap's one place, held by the dead
        begun = time.monotonic()
        for i in range(2):
            await _enqueue_hold(ctx, queue, f"bulk:{account}:{queue}:{i}", account)
        worker = _bulk_worker(ctx, queue, timeline, 1.5, cls=_ShortLease, account_bulk_jobs=1)
        await asyncio.wait_for(worker.main(), timeout=30)
        first, second = sorted(timeline.spans.values())
        assert 0.45 < first[0] - begun < 3.0  # waited for the dead job's place to lapse, and no longer
        assert second[0] >= first[1]  # the first job kept its place for 1.5 s, two and a half leases
        assert timeline.most[account] == 1
        assert await ctx.queue.zcard(key) == 0
    finally:
        await ctx.queue.delete(queue, key)


async def test_a_worker_refills_its_bulk_places_as_jobs_end(ctx: ProcessContext) -> None:
    """Running jobs stay in arq's queue until they end: they must not count against the places they already
    hold. Four places, two long jobs and ten short ones (in any order): the two places the long jobs leave
    free are taken again as each short job ends, so the short ones are all done long before the long ones."""
    queue = f"test-claims-{uuid.uuid4().hex[:8]}"
    accounts = [f"t{uuid.uuid4().hex[:8]}" for _ in range(12)]
    timeline = _Timeline()
    try:
        for i, account in enumerate(accounts):
            await _enqueue_hold(ctx, queue, f"bulk:{account}:{queue}", "bulk", 2.5 if i < 2 else 0.1)
        worker = _bulk_worker(ctx, queue, timeline, 0, max_jobs=10, max_bulk_jobs=4)
        await asyncio.wait_for(worker.main(), timeout=30)
        assert len(timeline.spans) == 12
        assert timeline.most["bulk"] == 4
        long_ends = [timeline.spans[f"bulk:{a}:{queue}"][1] for a in accounts[:2]]
        short_ends = [timeline.spans[f"bulk:{a}:{queue}"][1] for a in accounts[2:]]
        # Ten short jobs through at least two places: about 0.5 s of their own. Counting the running long
        # jobs twice left no place free until they ended (2.5 s).
        assert max(short_ends) < min(long_ends) - 0.8
    finally:
        await ctx.queue.delete(queue, *(bulk_running_key(a) for a in accounts))


async def test_live_jobs_behind_a_full_read_of_passed_over_bulk_jobs_still_start(ctx: ProcessContext) -> None:
    """More due bulk jobs of a capped account than one queue read holds, live jobs behind them: the worker reads
    on past the passed-over ones instead of leaving the live jobs unread until the front clears."""
    queue = f"test-claims-{uuid.uuid4().hex[:8]}"
    account = f"t{uuid.uuid4().hex[:8]}"
    timeline = _Timeline()
    try:
        for i in range(15):
            await _enqueue_hold(ctx, queue, f"bulk:{account}:{queue}:{i}", "bulk", 0.3)
        await asyncio.sleep(0.01)  # later scores: ids of one millisecond are read in the order of their text
        for i in range(3):
            await _enqueue_hold(ctx, queue, f"{queue}:live{i}", "live", 0.01)
        begun = time.monotonic()
        worker = _bulk_worker(ctx, queue, timeline, 0, max_jobs=5, account_bulk_jobs=1, queue_read_limit=10)
        await asyncio.wait_for(worker.main(), timeout=30)
        assert len(timeline.spans) == 18
        assert timeline.most["bulk"] == 1
        live_starts = [timeline.spans[f"{queue}:live{i}"][0] - begun for i in range(3)]
        assert max(live_starts) < 0.3  # before the first bulk job ended, not after the 15 of them (4.5 s)
    finally:
        await ctx.queue.delete(queue, bulk_running_key(account))
