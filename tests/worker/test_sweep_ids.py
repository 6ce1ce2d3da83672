"""The sweeper's re-enqueues of bulk work take one fixed id per account (or run), so sweeps every 10 s never
pile jobs up behind bulk places that stay taken; other enqueues stay unique, or take one id per window where they coalesce on purpose (real Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from arq.connections import ArqRedis

from app.context import ProcessContext
from app.queue import bulk_queue, enqueue


async def test_a_sweep_adds_no_second_job_while_its_first_waits(ctx: ProcessContext) -> None:
    queue_name = f"test-sweep-{uuid.uuid4().hex[:8]}"
    queue = ArqRedis(connection_pool=ctx.queue.connection_pool, default_queue_name=queue_name)
    bulk_name = bulk_queue(queue_name)  # where bulk jobs wait
    account = 10**12 + int(uuid.uuid4().int % 10**9)
    run_id = uuid.uuid4().hex
    try:
        for _ in range(3):
            await enqueue.activity_notes(queue, account, sweep=True)
            await enqueue.full_sync(queue, account, run_id, sweep=True)
        assert await queue.zcard(bulk_name) == 2
        await enqueue.activity_notes(queue, account)  # after a commit, or a job with more to do
        await enqueue.full_sync(queue, account, run_id)  # a slice's own next slice
        ids = [i.decode() for i in await queue.zrange(bulk_name, 0, -1)]
        assert len(ids) == 4
        assert await queue.zcard(queue_name) == 0  # none in the live queue
        assert all(i.startswith(f"bulk:{account}:") for i in ids)  # still bulk work for the claims' caps
    finally:
        ids = await queue.zrange(bulk_name, 0, -1)
        if ids:
            await queue.delete(*(b"arq:job:" + i for i in ids))
        await queue.delete(queue_name, bulk_name)


async def test_each_orphaning_of_a_run_gets_its_own_sweep_job(ctx: ProcessContext) -> None:
    """A slice the sweeper started and that was killed keeps its id "in progress" at arq for the job timeout +
    10 s: the re-enqueue after the next lapse of the run's lease must not share that id, or it is dropped."""
    queue_name = f"test-sweep-{uuid.uuid4().hex[:8]}"
    queue = ArqRedis(connection_pool=ctx.queue.connection_pool, default_queue_name=queue_name)
    bulk_name = bulk_queue(queue_name)
    account = 10**12 + int(uuid.uuid4().int % 10**9)
    run_id = uuid.uuid4().hex
    first, second = datetime(2026, 12, 1, 10, 0, tzinfo=UTC), datetime(2026, 12, 1, 10, 1, tzinfo=UTC)
    try:
        for _ in range(3):  # sweeps while the first orphaning lasts: one job
            await enqueue.full_sync(queue, account, run_id, sweep=True, orphaned_at=first)
        assert await queue.zcard(bulk_name) == 1
        await queue.set(b"arq:in-progress:" + (await queue.zrange(bulk_name, 0, -1))[0], b"1", px=60_000)
        await enqueue.full_sync(queue, account, run_id, sweep=True, orphaned_at=second)
        ids = [i.decode() for i in await queue.zrange(bulk_name, 0, -1)]
        assert len(ids) == 2
        assert all(len(i) <= 64 for i in ids)  # a lease owner's width
    finally:
        ids = await queue.zrange(bulk_name, 0, -1)
        if ids:
            await queue.delete(*(b"arq:job:" + i for i in ids), *(b"arq:in-progress:" + i for i in ids))
        await queue.delete(queue_name, bulk_name)


async def test_activity_wake_ups_coalesce_into_one_job_per_window(ctx: ProcessContext) -> None:
    """Every events round asks for a notes job and, with a stop among its events, a tags job: within one window
    they are one job each, deferred to the window's end, so Kommo's calls go out full."""
    queue_name = f"test-window-{uuid.uuid4().hex[:8]}"
    queue = ArqRedis(connection_pool=ctx.queue.connection_pool, default_queue_name=queue_name)
    bulk_name = bulk_queue(queue_name)
    account = 10**12 + int(uuid.uuid4().int % 10**9)
    try:
        # At the start of a window, so that the asks below fall in one.
        await asyncio.sleep(enqueue.TAGS_WINDOW_SECONDS - time.time() % enqueue.TAGS_WINDOW_SECONDS + 0.01)
        for _ in range(5):
            await enqueue.activity_notes_window(queue, account)
            await enqueue.tag_unsubscribes(queue, account)
        assert await queue.zcard(bulk_name) == 1
        assert await queue.zcard(queue_name) == 1
        for name, window in (
            (bulk_name, enqueue.NOTES_WINDOW_SECONDS),
            (queue_name, enqueue.TAGS_WINDOW_SECONDS),
        ):
            ((_, due_ms),) = await queue.zrange(name, 0, -1, withscores=True)
            assert 0 < due_ms / 1000 - time.time() <= window
        # A part-filled call held back for 3 s asks for a job that late, in a later window.
        await enqueue.activity_notes_window(queue, account, after=3.0)
        assert await queue.zcard(bulk_name) == 2
        latest = max(score for _, score in await queue.zrange(bulk_name, 0, -1, withscores=True))
        assert 3.0 <= latest / 1000 - time.time() <= 3.0 + enqueue.NOTES_WINDOW_SECONDS
    finally:
        ids = [*await queue.zrange(bulk_name, 0, -1), *await queue.zrange(queue_name, 0, -1)]
        if ids:
            await queue.delete(*(b"arq:job:" + i for i in ids))
        await queue.delete(queue_name, bulk_name)
