"""Limiters the app does not use, for tests only.

``Unlimited`` never waits: for tests of other concerns, or to provoke a provider's own limit. ``TokenBucket``
(rate per period, bursts up to a capacity) and ``SlidingWindow`` (at most n grants in any window) are the
textbook limiters, kept to show against the sandboxes why the app's budgets are round-trip windows
(``app.connectors.ratelimit.RoundTripWindow`` via ``app.context.kommo_budget`` and ``unisender_budget``): a
bucket admits its burst plus its rate in one window, and a window over grant times is broken by arrival
jitter (the provider counts arrivals), unless its margin covers the jitter.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class Unlimited:
    async def acquire(self, cost: float = 1.0) -> None:
        return None

    def pause(self, seconds: float) -> None:
        return None

    def returned(self) -> None:
        return None


class TokenBucket:
    """``rate`` tokens per ``per`` seconds, bursts up to ``burst`` (default: ``rate``); waiters in order."""

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

    def returned(self) -> None:
        return None  # counts grants, not returns

    async def acquire(self, cost: float = 1.0) -> None:
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

    def returned(self) -> None:
        return None  # counts grants, not returns

    @property
    def last_grant(self) -> float:
        """When the latest acquisition was granted (``time.monotonic()``; 0 before any)."""
        return self._grants[-1] if self._grants else 0.0

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


def max_in_window(stamps: list[float], window: float) -> int:
    """The most of the sorted ``stamps`` that fall in any ``window`` seconds (how a provider counts calls)."""
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while t - stamps[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best
