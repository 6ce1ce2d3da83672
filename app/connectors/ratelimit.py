"""Client-side rate budgets, so our own calls never provoke a provider's 429."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class RateLimiter(Protocol):
    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until ``cost`` units of budget are available, then spend them."""

    def pause(self, seconds: float) -> None:
        """Stop granting budget for ``seconds`` (the provider told us to back off)."""


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
