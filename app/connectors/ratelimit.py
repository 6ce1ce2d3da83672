"""Client-side rate budgets, so our own calls never provoke a provider's 429."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Protocol

import httpx

# Bulk work (full syncs, spec re-derivations, replays, activity notes) draws from the same provider budgets
# as live changes but never ahead of them: a live caller waiting for a budget is served before any bulk
# caller waiting for it, in this process and (through Redis) in every other. Jobs mark themselves; the
# mark follows every task they start.
_BULK: ContextVar[bool] = ContextVar("contactsync_bulk_work", default=False)


def is_bulk() -> bool:
    """True inside bulk work (see ``bulk_work``)."""
    return _BULK.get()


@contextlib.contextmanager
def bulk_work(bulk: bool = True) -> Iterator[None]:
    """Mark the calls made inside (and by tasks started inside) as bulk work, or as live with False."""
    token = _BULK.set(bulk)
    try:
        yield
    finally:
        _BULK.reset(token)


class RateLimiter(Protocol):
    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` units of budget are available, then spend them."""

    def pause(self, seconds: float) -> None:
        """Stop granting budget for ``seconds`` (the provider told us to back off)."""

    def returned(self) -> None:
        """The calling task's calls have been answered: the provider counted them before it answered, so the
        window they occupy may end from now (without this, from when the task asks again or ends)."""


async def send_counted(
    http: httpx.AsyncClient, request: httpx.Request, limiter: RateLimiter
) -> httpx.Response:
    """Send a call ``limiter`` granted and read its whole answer, telling the limiter the call returned as soon
    as the answer's headers are in: the provider counted the call before it began to answer, and reading a
    large body (a page of contacts) on a busy event loop would otherwise stretch each window."""
    response = await http.send(request, stream=True)
    limiter.returned()
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


class PriorityLock:
    """A lock whose waiters get it live first, then bulk, first come first served within each."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def live_waiting(self) -> bool:
        return any(prio == 0 and not fut.done() for prio, _, fut in self._waiters)

    async def acquire(self, *, bulk: bool) -> None:
        if not self._held and not self._waiters:
            self._held = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (int(bulk), next(self._order), fut)
        heapq.heappush(self._waiters, entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed to us just as we were cancelled: pass it on
            elif entry in self._waiters:
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the lock passes to it, still held
                return
        self._held = False

    @contextlib.asynccontextmanager
    async def hold(self, *, bulk: bool) -> AsyncIterator[None]:
        await self.acquire(bulk=bulk)
        try:
            yield
        finally:
            self.release()


def call_of(cost: float, limit: int, limiter: str) -> tuple[int, asyncio.Task[object]]:
    """The units a call of ``cost`` takes and the task making it: a limiter counts calls per task (a task that
    asks again has had its previous call returned)."""
    units = max(1, int(cost))
    if units > limit:
        raise ValueError(f"cost {cost} exceeds the window limit {limit}")
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError(f"{limiter}.acquire must run inside an asyncio task")
    return units, task


class _Grant:
    __slots__ = ("end", "start")

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end  # when the call is known to have finished (until then, start + cap)


class RoundTripWindow:
    """At most ``limit`` calls in any ``window`` seconds *as the provider counts them*, whatever the delays.

    A provider stamps a call when it arrives, which is after we sent it and before its answer reaches us.
    So if call n+limit is sent at least ``window`` after call n has *returned*, it arrives at least ``window``
    after call n arrived, however long either spent in our event loop, the network or the provider's queue.
    A fixed guard after the grant only covers jitter up to that guard; this one costs exactly the call's
    round trip (tens of milliseconds to a nearby server) and widens by itself when delays grow under load.

    A call counts as returned when its caller says so (``returned``: a client does as soon as the answer's
    headers are in, before it reads and decodes the body), or else when the task that made it asks for the
    next call, or ends. A task that goes on with other work after its call without saying holds that slot for
    at most ``cap`` seconds after the grant. Every millisecond between the provider's answer and our marking
    it is lost once per window: at 7 calls a second, 100 ms of it cost a tenth of the rate.

    Waiting callers are served live first, then bulk (``bulk_work``): bulk work waits behind at most the
    one call already being granted when a live caller arrives.
    """

    def __init__(self, limit: int, window: float, *, cap: float = 2.0) -> None:
        if limit < 1 or window <= 0 or cap <= 0:
            raise ValueError("limit must be >= 1, window and cap positive")
        self._limit = limit
        self._window = window
        self._cap = cap
        self._grants: list[_Grant] = []
        self._open: dict[asyncio.Task[object], list[_Grant]] = {}
        self._watched: set[asyncio.Task[object]] = set()
        self._paused_until = 0.0
        self._lock = PriorityLock()
        self._settled = asyncio.Event()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _settle(self, task: asyncio.Task[object]) -> None:
        grants = self._open.pop(task, None)
        if not grants:
            return
        now = time.monotonic()
        for grant in grants:
            grant.end = min(grant.end, max(grant.start, now))
        self._settled.set()

    def returned(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._settle(task)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._watched.discard(task)
        self._settle(task)

    async def acquire(self, cost: float = 1.0) -> None:
        units, task = call_of(cost, self._limit, "RoundTripWindow")
        # This task asks again, so its previous call has returned.
        self._settle(task)
        async with self._lock.hold(bulk=is_bulk()):
            granted: list[_Grant] = []
            for _ in range(units):
                while True:
                    now = time.monotonic()
                    if now < self._paused_until:
                        await asyncio.sleep(self._paused_until - now)
                        continue
                    self._grants = [g for g in self._grants if g.end + self._window > now]
                    if len(self._grants) < self._limit:
                        grant = _Grant(now, now + self._cap)
                        self._grants.append(grant)
                        granted.append(grant)
                        break
                    # Sleep until the oldest slot frees, or until a call returns (which may free one sooner).
                    self._settled.clear()
                    delay = min(g.end for g in self._grants) + self._window - now
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._settled.wait(), delay)
        if task not in self._watched:
            self._watched.add(task)
            task.add_done_callback(self._task_done)
        self._open.setdefault(task, []).extend(granted)
