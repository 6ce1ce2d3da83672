"""The queue wiring: a job enqueued through the process context runs in a real arq worker on real Redis."""

from __future__ import annotations

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
