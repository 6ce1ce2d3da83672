"""Live callers go before bulk work on every budget: in one process (the window's own lock) and across
processes (the live-waiting mark in Redis), without ever breaking the provider's rule."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis

from app.connectors.ratelimit import PriorityLock, RoundTripWindow, bulk_work, is_bulk
from app.connectors.shared_budget import SharedWindow
from tests.support.limits import max_in_window


async def test_the_mark_follows_tasks_started_inside_bulk_work() -> None:
    seen: list[bool] = []

    async def child() -> None:
        seen.append(is_bulk())

    assert not is_bulk()
    with bulk_work():
        await asyncio.create_task(child())
        with bulk_work(False):
            await asyncio.create_task(child())
    await asyncio.create_task(child())
    assert seen == [True, False, False]


async def test_priority_lock_hands_over_live_first_then_in_arrival_order() -> None:
    lock = PriorityLock()
    order: list[str] = []

    async def take(name: str, bulk: bool) -> None:
        async with lock.hold(bulk=bulk):
            order.append(name)
            await asyncio.sleep(0)

    await lock.acquire(bulk=True)  # held while the others line up
    tasks = [
        asyncio.create_task(take(n, b)) for n, b in [("b1", True), ("l1", False), ("b2", True), ("l2", False)]
    ]
    await asyncio.sleep(0.01)
    assert lock.live_waiting
    lock.release()
    await asyncio.gather(*tasks)
    assert order == ["l1", "l2", "b1", "b2"]
    assert not lock.live_waiting


async def test_a_cancelled_waiter_never_keeps_the_lock() -> None:
    lock = PriorityLock()
    await lock.acquire(bulk=False)
    gone = asyncio.create_task(lock.acquire(bulk=False))
    after = asyncio.create_task(lock.acquire(bulk=True))
    await asyncio.sleep(0.01)
    gone.cancel()
    lock.release()
    await asyncio.wait_for(after, 1)  # the lock went past the cancelled waiter
    lock.release()
    await asyncio.wait_for(lock.acquire(bulk=True), 1)  # and is free again afterwards


async def test_round_trip_window_serves_a_live_caller_before_queued_bulk_work() -> None:
    window = RoundTripWindow(2, 0.1)
    granted: list[str] = []

    async def call(name: str, bulk: bool) -> None:
        with bulk_work(bulk):
            await window.acquire()
        granted.append(name)

    bulk = [asyncio.create_task(call(f"b{i}", True)) for i in range(8)]
    await asyncio.sleep(0.05)  # two granted, one holding the lock for the next slot, five queued
    live = asyncio.create_task(call("live", False))
    await asyncio.gather(live, *bulk)
    # Behind the two first calls and the one already waiting for the next slot: nobody else.
    assert granted.index("live") <= 3, granted


async def test_a_live_caller_in_one_process_goes_before_bulk_work_in_the_others(
    clients: list[aioredis.Redis],
) -> None:
    limit, window = 2, 0.2
    name = f"test:{uuid.uuid4().hex}"
    budgets = [SharedWindow(c, name, limit=limit, window=window, fallback_limit=1) for c in clients]
    stamps: list[float] = []
    live_waits: list[float] = []
    stop = asyncio.Event()

    async def bulk_loop(budget: SharedWindow) -> None:
        async def one() -> None:
            with bulk_work():
                await budget.acquire()
            stamps.append(time.monotonic())

        while not stop.is_set():
            await asyncio.create_task(one())

    async def live_calls(budget: SharedWindow) -> None:
        await asyncio.sleep(0.3)  # the bulk callers hold the budget by now
        for _ in range(6):

            async def one() -> None:
                started = time.monotonic()
                await budget.acquire()
                stamps.append(time.monotonic())
                live_waits.append(stamps[-1] - started)

            await asyncio.create_task(one())
        stop.set()

    # Three processes with six bulk fetchers each keep eighteen callers queued for two calls a window.
    workers = [asyncio.create_task(bulk_loop(b)) for b in budgets[:3] for _ in range(6)]
    await asyncio.wait_for(live_calls(budgets[3]), 10)
    await asyncio.gather(*workers)
    assert [b.outages for b in budgets] == [0, 0, 0, 0]
    assert max_in_window(sorted(stamps), window) <= limit
    # Each live call waits for at most the calls already granted to free their slots (a window), plus the
    # polls; in line behind eighteen bulk callers it would wait about nine windows on average.
    assert max(live_waits) < window + 0.3, live_waits
