"""Client-side rate budgets, so our own calls never provoke a provider's 429."""

from __future__ import annotations

import asyncio
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
