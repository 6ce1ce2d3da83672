"""Live pushes: the first change after a quiet window goes at once, the changes right behind it share the
window's one deferred job, and a steady stream never gets a push of its own per change."""

from __future__ import annotations

import asyncio
import time

from app.context import ProcessContext
from app.queue import QUEUE_NAME, enqueue

ACCOUNT = 4711


async def _queued(pc: ProcessContext) -> list[tuple[str, float]]:
    """The queued flush jobs of the account: (job id, seconds from now until it is due)."""
    now = time.time()
    rows = await pc.queue.zrange(QUEUE_NAME, 0, -1, withscores=True)
    return sorted(
        (job.decode(), score / 1000 - now)
        for job, score in rows
        if job.decode().startswith(f"flush:{ACCOUNT}:")
    )


async def test_a_change_after_a_quiet_window_is_pushed_at_once_the_next_ones_coalesce(
    ctx: ProcessContext,
) -> None:
    await enqueue.flush_outbox(ctx.queue, ACCOUNT)
    first = await _queued(ctx)
    assert len(first) == 1
    assert first[0][0].startswith(f"flush:{ACCOUNT}:lead:")
    assert first[0][1] <= 0.05  # due now, not at the window's end

    burst_started = time.time()
    for _ in range(5):  # a burst right behind it: one deferred job for the window
        await enqueue.flush_outbox(ctx.queue, ACCOUNT)
    burst_ended = time.time()
    queued = await _queued(ctx)
    # Due times as instants: the queue is read after the burst, and on a loaded box a window may end meanwhile.
    now = time.time()
    windows = [now + due for job, due in queued if ":w" in job]
    assert len(queued) in (
        2,
        3,
    )  # the lead, and this window's job (or two, if the burst crossed a window edge)
    assert windows
    # Each window's job is deferred to its window's end: after the change that asked for it, at most a window on.
    assert all(burst_started < due <= burst_ended + enqueue.FLUSH_WINDOW_SECONDS + 0.05 for due in windows)

    # A steady stream (a change every 0.2 s, under a window apart) gets no second lead.
    for _ in range(4):
        await asyncio.sleep(0.2)
        await enqueue.flush_outbox(ctx.queue, ACCOUNT)
    assert sum(job.startswith(f"flush:{ACCOUNT}:lead:") for job, _ in await _queued(ctx)) == 1

    # Quiet for longer than a window: the next change goes at once again.
    await asyncio.sleep(enqueue.FLUSH_WINDOW_SECONDS + 0.1)
    await enqueue.flush_outbox(ctx.queue, ACCOUNT)
    assert sum(job.startswith(f"flush:{ACCOUNT}:lead:") for job, _ in await _queued(ctx)) == 2
