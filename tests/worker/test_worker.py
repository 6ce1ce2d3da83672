"""The queue wiring: a job enqueued through the process context runs in a real arq worker on real Redis."""

from __future__ import annotations

import pytest

from app.context import ProcessContext
from app.queue import QUEUE_NAME
from app.worker.settings import build_worker


async def test_ping_job_runs_on_a_burst_worker(ctx: ProcessContext) -> None:
    job = await ctx.queue.enqueue_job("ping", "hello", _job_id="ping-1")
    assert job is not None
    # keep_result=0 means the same id may be enqueued again as soon as it finished
    worker = build_worker(ctx, burst=True, handle_signals=False)
    await worker.main()
    assert worker.jobs_complete >= 1  # ping, plus the sweep cron that runs at start-up
    assert worker.jobs_failed == 0
    assert await ctx.queue.zcard(QUEUE_NAME) == 0
    assert not await ctx.queue.exists("arq:job:ping-1")
    again = await ctx.queue.enqueue_job("ping", "hello", _job_id="ping-1")
    assert again is not None, "a finished job's result key must not block re-enqueueing"


async def test_bulk_jobs_wait_in_their_own_queue_for_a_worker_of_their_kind(ctx: ProcessContext) -> None:
    """Bulk ids go to the bulk queue (so a crowd of them never stands in front of live jobs in the live
    queue's reads); a ``live`` process leaves them there, a ``bulk`` one runs them, and ``all`` runs both."""
    from app.queue import BULK_QUEUE_NAME, enqueue

    await enqueue.activity_notes(ctx.queue, 10**12 + 1)  # a bulk job: nothing pending, it ends at once
    await ctx.queue.enqueue_job("ping", "live", _job_id="ping-live")
    assert (await ctx.queue.zcard(BULK_QUEUE_NAME), await ctx.queue.zcard(QUEUE_NAME)) == (1, 1)
    live = build_worker(ctx, burst=True, handle_signals=False, role="live")
    assert len(live.workers) == 1
    await live.main()
    assert (await ctx.queue.zcard(BULK_QUEUE_NAME), await ctx.queue.zcard(QUEUE_NAME)) == (1, 0)
    bulk = build_worker(ctx, burst=True, handle_signals=False, role="bulk")
    assert bulk.workers[0].max_jobs == ctx.settings.worker_max_jobs  # all of its slots for bulk work
    await bulk.main()
    assert bulk.jobs_complete == 1
    assert bulk.jobs_failed == 0
    assert await ctx.queue.zcard(BULK_QUEUE_NAME) == 0
    both = build_worker(ctx, burst=True, handle_signals=False)
    assert [w.queue_name for w in both.workers] == [QUEUE_NAME, BULK_QUEUE_NAME]
    assert both.workers[1].max_jobs == ctx.settings.worker_max_bulk_jobs
    await enqueue.activity_notes(ctx.queue, 10**12 + 2)
    await ctx.queue.enqueue_job("ping", "again", _job_id="ping-again")
    await both.main()
    assert (await ctx.queue.zcard(BULK_QUEUE_NAME), await ctx.queue.zcard(QUEUE_NAME)) == (0, 0)
    for workers in (live, bulk, both):
        await workers.close()


async def test_jobs_retry_when_their_database_connection_was_lost() -> None:
    """Without pre-ping, a connection broken by a PostgreSQL restart fails one statement: the job retries."""
    from arq import Retry
    from sqlalchemy.exc import DBAPIError

    from app.worker.settings import _reconnecting

    async def lost(ctx: dict[str, object]) -> None:
        raise DBAPIError("SELECT 1", None, ConnectionResetError("gone"), connection_invalidated=True)

    async def bad_sql(ctx: dict[str, object]) -> None:
        raise DBAPIError("SELECT x", None, ValueError("syntax"))

    async def fine(ctx: dict[str, object], value: int) -> int:
        return value

    with pytest.raises(Retry):
        await _reconnecting(lost)({})
    with pytest.raises(DBAPIError):
        await _reconnecting(bad_sql)({})
    assert await _reconnecting(fine)({}, 7) == 7
    assert _reconnecting(fine).__name__ == "fine"  # arq names jobs after the function


async def test_a_stopped_worker_ends_even_when_a_cancellation_is_lost() -> None:
    """redis-py sends every command through ``asyncio.wait_for``; on Python 3.11 a cancellation that arrives
    just as the send completes is lost there, and arq's loop polls on: a worker told to stop kept running
    until it was killed. Cancelled at each step of such a loop, the task ends every time."""
    import asyncio

    from app.worker.group import cancel_and_wait

    async def polls() -> None:
        while True:
            await asyncio.wait_for(asyncio.sleep(0), timeout=5)

    for steps in range(8):
        task = asyncio.create_task(polls())
        for _ in range(steps):
            await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(task, every=0.05), timeout=5)
        assert task.cancelled()
