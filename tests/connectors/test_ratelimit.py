"""The limiters never exceed the provider's rule in any window."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.connectors.ratelimit import SlidingWindow, TokenBucket


def _max_in_window(stamps: list[float], window: float) -> int:
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while t - stamps[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_sliding_window_never_exceeds_the_limit_and_runs_at_full_rate() -> None:
    limiter = SlidingWindow(7, 0.2, margin=0.0)
    stamps: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        stamps.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(call() for _ in range(35)))
    elapsed = time.monotonic() - start
    stamps.sort()
    assert _max_in_window(stamps, 0.2) <= 7
    assert 0.75 <= elapsed < 1.2  # 35 calls at 7 per 0.2 s: four full windows of waiting


async def test_token_bucket_overshoots_a_window_which_is_why_sliding_window_exists() -> None:
    bucket = TokenBucket(7, per=0.2, burst=7)
    stamps: list[float] = []
    for _ in range(14):
        await bucket.acquire()
        stamps.append(time.monotonic())
    assert _max_in_window(stamps, 0.2) > 7


async def test_pause_holds_every_caller() -> None:
    limiter = SlidingWindow(100, 1.0)
    limiter.pause(0.3)
    start = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - start >= 0.29


async def test_guard_spaces_each_call_beyond_the_window_at_the_full_limit() -> None:
    """The absolute guard: call n+limit is granted at least window + guard after call n, and no later."""
    limiter = SlidingWindow(7, 0.2, margin=0.0, guard=0.05)
    stamps: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        stamps.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(call() for _ in range(21)))
    elapsed = time.monotonic() - start
    stamps.sort()
    assert all(b - a >= 0.25 - 1e-3 for a, b in zip(stamps, stamps[7:], strict=False))
    assert _max_in_window(stamps, 0.25 - 1e-3) <= 7
    assert 0.49 <= elapsed < 0.8  # 21 calls: the full 7 per window, two waits of 0.25 s


def test_negative_allowances_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        SlidingWindow(7, 1.0, guard=-0.1)
