"""Client-side rate budgets, so our own calls never provoke a provider's 429."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Protocol


class RateLimiter(Protocol):
    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` units of budget are available, then spend them."""

    def pause(self, seconds: float) -> None:
        """Stop granting budget for ``seconds`` (the provider told us to back off)."""


class TokenBucket:
    """An in-process token bucket: ``rate`` tokens per ``per`` seconds, bursts up to ``burst``.

    Waiters are served in arrival order (one lock), so a steady stream never exceeds the rate in any window
    of ``per`` seconds by more than ``burst`` tokens.
    """

    def __init__(self, rate: float, per: float = 1.0, burst: float | None = None) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and per must be positive")
        self._fill_per_second = rate / per
        self._capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._fill_per_second)
        self._updated = now

    def pause(self, seconds: float) -> None:
        now = time.monotonic()
        self._paused_until = max(self._paused_until, now + seconds)
        self._refill(now)
        self._tokens = min(self._tokens, 0.0)

    async def acquire(self, cost: float = 1.0) -> None:
        if cost > self._capacity:
            raise ValueError(f"cost {cost} exceeds bucket capacity {self._capacity}")
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= cost:
                    self._tokens -= cost
                    return
                await asyncio.sleep((cost - self._tokens) / self._fill_per_second)


class Unlimited:
    """A limiter that never waits (tests of other concerns, or providers without limits)."""

    async def acquire(self, cost: float = 1.0) -> None:
        return None

    def pause(self, seconds: float) -> None:
        return None


class SlidingWindow:
    """At most ``limit`` acquisitions in any ``window`` seconds: the exact rule providers enforce.

    A token bucket with burst b and rate r admits up to b + r·window calls in one window, so it either
    overshoots a provider's limit or runs below it; this keeps the last ``limit`` grant times instead.

    The provider counts arrivals, we count grants: a call granted at t arrives at t + delay, and the delay
    varies (network, a busy event loop between grant and send, the provider's own queueing). Call n+limit
    arrives at least ``window`` after call n as long as the delays of the two differ by less than the
    extra spacing we add, so the window is widened by ``guard`` seconds (an absolute allowance for that
    jitter, which does not grow with the window) plus ``margin`` × window (a relative one, for long windows).
    """

    def __init__(self, limit: int, window: float, *, margin: float = 0.05, guard: float = 0.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window positive")
        if margin < 0 or guard < 0:
            raise ValueError("margin and guard must not be negative")
        self._limit = limit
        self._window = window * (1.0 + margin) + guard
        self._grants: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, cost: float = 1.0) -> None:
        units = max(1, int(cost))
        if units > self._limit:
            raise ValueError(f"cost {cost} exceeds the window limit {self._limit}")
        async with self._lock:
            for _ in range(units):
                while True:
                    now = time.monotonic()
                    if now < self._paused_until:
                        await asyncio.sleep(self._paused_until - now)
                        continue
                    while self._grants and now - self._grants[0] >= self._window:
                        self._grants.popleft()
                    if len(self._grants) < self._limit:
                        self._grants.append(now)
                        break
                    await asyncio.sleep(self._window - (now - self._grants[0]))


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

    A call counts as returned when the task that made it asks for the next call, or ends. A task that goes
    on with other work after its call holds that slot for at most ``cap`` seconds after the grant.
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
        self._lock = asyncio.Lock()
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

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._watched.discard(task)
        self._settle(task)

    async def acquire(self, cost: float = 1.0) -> None:
        units = max(1, int(cost))
        if units > self._limit:
            raise ValueError(f"cost {cost} exceeds the window limit {self._limit}")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("RoundTripWindow.acquire must run inside an asyncio task")
        # This task asks again, so its previous call has returned.
        self._settle(task)
        async with self._lock:
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
