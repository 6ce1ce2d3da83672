"""Client-side rate budgets, so our own calls never provoke a provider's 429."""

from __future__ import annotations

import asyncio
import time
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
