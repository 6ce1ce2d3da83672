"""The limiters never exceed the provider's rule in any window."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from app.connectors.ratelimit import RoundTripWindow
from tests.support.limits import SlidingWindow, TokenBucket, max_in_window


async def test_sliding_window_never_exceeds_the_limit_and_runs_at_full_rate() -> None:
    limiter = SlidingWindow(7, 0.2, margin=0.0)
    stamps: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        stamps.append(limiter.last_grant)  # the grant time (see the guard test below)

    start = time.monotonic()
    await asyncio.gather(*(call() for _ in range(35)))
    elapsed = time.monotonic() - start
    stamps.sort()
    assert max_in_window(stamps, 0.2) <= 7
    assert 0.75 <= elapsed < 1.2  # 35 calls at 7 per 0.2 s: four full windows of waiting


async def test_token_bucket_overshoots_a_window_which_is_why_sliding_window_exists() -> None:
    bucket = TokenBucket(7, per=0.2, burst=7)
    stamps: list[float] = []
    for _ in range(14):
        await bucket.acquire()
        stamps.append(time.monotonic())
    assert max_in_window(stamps, 0.2) > 7


async def test_pause_holds_every_caller() -> None:
    limiter = SlidingWindow(100, 1.0)
    limiter.pause(0.3)
    start = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - start >= 0.29


async def test_guard_spaces_each_call_beyond_the_window_at_the_full_limit() -> None:
    """The absolute guard: call n+limit is granted at least window + guard after call n, and no later.
    Grant times as the limiter took them: a clock read after ``acquire`` returns can come late for call n
    (the process descheduled on a loaded box) and not for call n+limit, which shrank the gap by that much."""
    limiter = SlidingWindow(7, 0.2, margin=0.0, guard=0.05)
    stamps: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        stamps.append(limiter.last_grant)  # no await since the grant: this call's

    start = time.monotonic()
    await asyncio.gather(*(call() for _ in range(21)))
    elapsed = time.monotonic() - start
    stamps.sort()
    assert all(b - a >= 0.25 - 1e-3 for a, b in zip(stamps, stamps[7:], strict=False))
    assert max_in_window(stamps, 0.25 - 1e-3) <= 7
    assert 0.49 <= elapsed < 0.8  # 21 calls: the full 7 per window, two waits of 0.25 s


def test_negative_allowances_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        SlidingWindow(7, 1.0, guard=-0.1)


async def _arrivals(limiter: RoundTripWindow | SlidingWindow, outbound: list[float]) -> list[float]:
    """Calls one after another, each in its own task (as full-sync fetches are); call i takes outbound[i]
    seconds to reach the provider, and its answer comes back at once. Returns the provider's arrival times."""
    arrivals: list[float] = []

    async def call(delay: float) -> None:
        await limiter.acquire()
        await asyncio.sleep(delay)
        arrivals.append(time.monotonic())

    for delay in outbound:
        await asyncio.create_task(call(delay))
    return arrivals


async def test_a_late_arrival_pushes_a_fixed_window_over_the_limit_but_not_the_round_trip_window() -> None:
    # The first call is delayed 60 ms on its way, the others not: with grant times only, call 8 lands less
    # than a window after call 1 did.
    outbound = [0.06] + [0.0] * 7
    naive = await _arrivals(SlidingWindow(7, 0.2, margin=0.0), outbound)
    assert max_in_window(naive, 0.2) == 8
    safe = await _arrivals(RoundTripWindow(7, 0.2), outbound)
    assert max_in_window(safe, 0.2) <= 7


async def test_round_trip_window_runs_at_the_limit_with_random_delays() -> None:
    rng = random.Random(7)
    limiter = RoundTripWindow(7, 0.2)
    arrivals: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        await asyncio.sleep(rng.uniform(0, 0.03))  # on the way
        arrivals.append(time.monotonic())
        await asyncio.sleep(rng.uniform(0, 0.03))  # the answer on its way back

    async def fetcher(calls: int) -> None:
        for _ in range(calls):
            await asyncio.create_task(call())

    start = time.monotonic()
    await asyncio.gather(*(fetcher(10) for _ in range(3)))
    elapsed = time.monotonic() - start
    arrivals.sort()
    assert max_in_window(arrivals, 0.2) <= 7
    # 30 calls at 7 per window: four waits of one window plus a round trip (≤ 60 ms) each.
    assert 0.8 <= elapsed < 1.4


async def test_a_task_asking_again_has_returned_and_a_silent_one_holds_its_slot_at_most_cap() -> None:
    limiter = RoundTripWindow(1, 0.1, cap=0.2)

    async def sequential() -> None:
        for _ in range(3):  # one task, sequential calls: each one frees the slot as it asks for the next
            await limiter.acquire()

    start = time.monotonic()
    await asyncio.create_task(sequential())
    assert 0.19 <= time.monotonic() - start < 0.3
    await asyncio.sleep(0.11)  # the task ended with its last call: that slot is free a window later

    async def silent() -> None:
        await limiter.acquire()
        await asyncio.sleep(1.0)  # keeps working after its call: nobody knows when the call returned

    holder = asyncio.create_task(silent())
    await asyncio.sleep(0.15)
    start = time.monotonic()
    await asyncio.create_task(limiter.acquire())
    holder.cancel()
    # The holder's grant counts until cap (0.2 s) plus the window (0.1 s) after it was made, not 1 s.
    assert 0.1 <= time.monotonic() - start < 0.25


async def test_a_call_said_returned_frees_its_slot_a_window_later_while_its_task_works_on() -> None:
    limiter = RoundTripWindow(1, 0.1, cap=1.0)

    async def call_then_decode() -> None:
        await limiter.acquire()
        await asyncio.sleep(0.05)  # the call's round trip
        limiter.returned()
        await asyncio.sleep(1.0)  # decoding what came back, still in the task

    holder = asyncio.create_task(call_then_decode())
    await asyncio.sleep(0.01)
    start = time.monotonic()
    await asyncio.create_task(limiter.acquire())
    holder.cancel()
    # A window after the return (0.04 + 0.1 s from here), not after the 1-s cap or the task's end.
    assert 0.13 <= time.monotonic() - start < 0.3
