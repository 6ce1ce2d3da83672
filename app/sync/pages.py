"""The page pipeline of a full-sync slice: a fetcher pages the CRM ahead at the rate limit while the slice
commits the pages behind it in order, and a pusher sends what was committed to the email platform meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import structlog

from app.connectors.base import ContactPage, CrmClient
from app.context import ProcessContext
from app.db.base import utcnow
from app.queue import enqueue
from app.sync import outbox

log = structlog.get_logger(__name__)

PAGE_SIZE = 250
# Page requests in flight at once: at 7 req/s one request may take up to ~0.28 s before latency, not the
# rate limit, sets the pace (real Kommo pages take ~0.2-0.5 s).
FETCH_CONCURRENCY = 2
# Fetched pages waiting for their commit: one second of Kommo's budget, so the burst a fresh rate window
# allows is taken at once even though commits are slower than fetches for a moment (a cold start, a lock
# wait, an ANALYZE); bounded, because memory and what a killed worker fetches again grow with it.
QUEUE_PAGES = 7


@dataclass
class Page:
    number: int
    page: ContactPage
    read_at: datetime  # when it was requested: what we stored before is older than what it says


@dataclass
class SliceEnd:
    """The fetcher stopped at the deadline; ``resume`` is the first page it did not hand over."""

    resume: int


PageItem = Page | SliceEnd | BaseException


async def _fetch(client: CrmClient, number: int) -> Page:
    read_at = utcnow()
    return Page(number, await client.list_contacts(page=number, limit=PAGE_SIZE), read_at)


async def fetch_pages(client: CrmClient, first: int, deadline: float, out: asyncio.Queue[PageItem]) -> None:
    """Fetch pages ``first``, ``first + 1`` … into ``out`` in page order, up to FETCH_CONCURRENCY requests at
    once, until the last page (a page without a next one) or the deadline.

    Kommo pages by number, so the following pages can be requested before the current one has arrived; that
    keeps the rate limiter, not Kommo's latency, the pace. ``out`` is bounded: when the committer falls
    behind, fetching waits, so memory and the pages re-read after a crash stay bounded. A fetch error is
    handed over in order too, so the pages before it are still committed.
    """
    inflight: deque[asyncio.Task[Page]] = deque()
    number = first
    try:
        while True:
            while len(inflight) < FETCH_CONCURRENCY and time.monotonic() < deadline:
                inflight.append(asyncio.create_task(_fetch(client, number)))
                number += 1
            if not inflight:
                await out.put(SliceEnd(number))
                return
            task = inflight.popleft()
            try:
                fetched = await task
            except Exception as exc:
                await out.put(exc)
                return
            await out.put(fetched)
            following = fetched.page.next_page
            if following is None:
                return  # the last page: anything requested after it is past the end
            if following != fetched.number + 1:
                # Not the numbering we speculated on: drop the guesses and follow the link.
                _cancel_all(inflight)
                number = following
    finally:
        _cancel_all(inflight)


def _cancel_all(tasks: deque[asyncio.Task[Page]]) -> None:
    while tasks:
        task = tasks.popleft()
        task.cancel()
        # A fetch that already failed must not be reported as "exception never retrieved".
        task.add_done_callback(_consume)


def _consume(task: asyncio.Task[Page]) -> None:
    if not task.cancelled():
        task.exception()


class Pusher:
    """Pushes the outbox of the account while the slice commits pages, in this job rather than in one
    arq flush job per page: no queue round trips, no jobs retrying against each other's flush lock, and the
    rows of the last page go out as soon as it is committed. Another flusher holding the account (e.g. a
    job the sweeper started) pushes our rows too; the next page tries again. When Unisender asks us to wait
    (or the account cannot push), a flush job takes over at the end, with its own retry and backoff.
    """

    def __init__(self, pc: ProcessContext, account_id: int) -> None:
        self._pc = pc
        self._account_id = account_id
        self._wanted = False
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # the last pass found another flusher at work
        self._handoff: float | None = None  # delay of the flush job to enqueue at the end, if any

    def poke(self) -> None:
        """New rows are committed: push them (now, or after the pass under way)."""
        self._wanted = True
        if self._handoff is None and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._wanted:
            self._wanted = False
            try:
                result = await outbox.flush_account(self._pc, self._account_id)
            except Exception as exc:
                log.warning("sync.push_failed", account_id=self._account_id, error=repr(exc))
                self._handoff = 0.0
                return
            if result.blocked is not None or result.retry_in is not None:
                self._handoff = result.retry_in or 0.0
                return
            self._busy = result.busy
            if result.more:
                # The pass stopped at its batch cap with rows left: another pass, or the flush job at the end.
                self._wanted = True

    async def drain(self, within: float) -> None:
        """Push what is committed, for at most ``within`` seconds (the job's timeout must not cut the slice
        short: its continuation is enqueued after this), then hand what may be left to a flush job."""
        self.poke()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=max(0.0, within))
            if not done:
                # A backlog (the pusher fell behind the pages): a flush job pushes the rest. A batch cut off
                # mid-import is sent again; importing the same rows twice is harmless.
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._handoff = 0.0
        if self._handoff is not None or self._busy:
            await enqueue.flush_outbox(self._pc.queue, self._account_id, delay=self._handoff or 0.0)

    def cancel(self) -> None:
        """Stop pushing (the slice is being torn down): the sweeper finds the rows left pending."""
        if self._task is not None:
            self._task.cancel()
