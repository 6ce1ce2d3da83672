"""Rate budgets shared by every process and machine, held in Redis by one atomic script.

Each budget is a sorted set ``contactsync:budget:<name>`` of grants scored with Redis's own clock (``TIME``
inside the script), so the machines' clocks never enter the count, plus a pause key
``contactsync:budget:<name>:pause`` that a provider's 429/403 sets for everyone. When Redis does not answer, a
process spends a conservative local share of the limit instead, and tries Redis again a second later.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.connectors.ratelimit import RateLimiter, RoundTripWindow

log = structlog.get_logger()

KEY_PREFIX = "contactsync:budget:"

# KEYS: the grants (sorted set), the pause key. ARGV: limit, window (µs), guard (µs), units, owner (this
# process's budget instance), serial. While the grants still counting are all the asking process's own, they
# count for ``window`` (the process spaces its own calls from when they returned, in its local window); as soon
# as another process's grant is among them, every grant counts for ``window + guard`` (a grant cannot know when
# another process's call returned). Returns 0 when ``units`` grants were added, else the µs to wait (the
# pause's rest, or until enough grants stop counting). Scores are µs since the epoch: < 2^53, exact as a Redis
# double.
_ACQUIRE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local guard = tonumber(ARGV[3])
local units = tonumber(ARGV[4])
local prefix = ARGV[5] .. ':'
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return paused * 1000
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window - guard)
local held = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local shared = 0
for i = 1, #held, 2 do
  if string.sub(held[i], 1, #prefix) ~= prefix then
    shared = guard
    break
  end
end
local ends = {}
for i = 2, #held, 2 do
  local ends_at = tonumber(held[i]) + window + shared
  if ends_at > now then
    ends[#ends + 1] = ends_at
  end
end
if #ends + units <= limit then
  for i = 1, units do
    redis.call('ZADD', KEYS[1], now, prefix .. ARGV[6] .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil((window + guard) / 1000) + 1000)
  return 0
end
table.sort(ends)
return math.max(1000, ends[#ends + units - limit] - now + 1)
"""

# KEYS: the pause key. ARGV: milliseconds. A shorter pause never replaces a longer one still running.
_PAUSE = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 0
"""


class SharedWindow:
    """At most ``limit`` calls in any ``window`` seconds over every process using ``name`` on one Redis.

    Calls go through this process's own ``RoundTripWindow`` first (its calls stay spaced from when they
    *returned*), then take a shared grant. A shared grant cannot know when another process's call returned,
    so grants count for ``window + guard`` when processes share the window: call n+limit is granted at
    least ``guard`` later than the provider's rule asks, which covers the difference in delay (our event loop,
    the network, the provider's queue, the script's reply) between two calls of different processes up to
    ``guard``. While a process is alone on a budget its grants count for ``window`` only (its local window
    already spaces them from their return), so it keeps the whole rate: a full sync loses nothing to sharing.
    As soon as two processes share the window, every grant counts for ``window + guard``. A fixed margin rather
    than a fraction: the jitter it covers is tens of milliseconds whatever the window, so 100 ms on Kommo's
    second and 3 s on Unisender's minute (5 %, as the local window's test measured) cost little rate.

    Any Redis error (or no reply within ``redis_timeout``) makes this process spend a local ``fallback_limit``
    per ``window`` instead (a share, so that a few processes falling back together stay under the provider's
    limit) until Redis answers again; it retries Redis ``retry_after`` seconds after the failure.
    """

    def __init__(
        self,
        redis: Redis,
        name: str,
        *,
        limit: int,
        window: float,
        guard: float,
        fallback_limit: int,
        retry_after: float = 1.0,
        redis_timeout: float = 1.0,
    ) -> None:
        if limit < 1 or window <= 0 or guard < 0 or not 1 <= fallback_limit <= limit:
            raise ValueError("limit >= 1, window > 0, guard >= 0 and 1 <= fallback_limit <= limit")
        self.name = name
        self._redis = redis
        self._limit = limit
        self._window_us = int(window * 1_000_000)
        self._guard_us = int(guard * 1_000_000)
        self._keys = [f"{KEY_PREFIX}{name}", f"{KEY_PREFIX}{name}:pause"]
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._pause_script = redis.register_script(_PAUSE)
        self._local = RoundTripWindow(limit, window)
        self._fallback = RoundTripWindow(fallback_limit, window)
        self._fallback_limit = fallback_limit
        self._retry_after = retry_after
        self._redis_timeout = redis_timeout
        self._down_until = 0.0
        self._outage = False
        self._instance = uuid.uuid4().hex
        self._serial = itertools.count()
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def fallback_active(self) -> bool:
        """True while this process spends its local share (Redis failed and has not answered since)."""
        return self._outage

    async def acquire(self, cost: float = 1.0) -> None:
        units = max(1, int(cost))
        if units > self._limit:
            raise ValueError(f"cost {cost} exceeds the window limit {self._limit}")
        await self._local.acquire(cost)
        # Each pass either grants or sleeps the wait Redis computed (≥ 1 ms), or leaves for the fallback.
        while time.monotonic() >= self._down_until:
            try:
                async with asyncio.timeout(self._redis_timeout):
                    wait_us = await self._try(units)
            except (RedisError, OSError, TimeoutError) as exc:
                self._went_down(exc)
                break
            if self._outage:
                self._outage = False
                log.info("budget.redis_recovered", budget=self.name)
            if wait_us <= 0:
                return
            await asyncio.sleep(wait_us / 1_000_000)
        await self._fallback.acquire(cost)

    async def _try(self, units: int) -> int:
        args: list[str | int] = [
            self._limit,
            self._window_us,
            self._guard_us,
            units,
            self._instance,
            next(self._serial),
        ]
        return int(await self._acquire_script(keys=self._keys, args=args))

    def _went_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_after
        if not self._outage:
            self._outage = True
            log.warning(
                "budget.redis_unavailable",
                budget=self.name,
                error=type(exc).__name__,
                fallback_limit=self._fallback_limit,
            )

    def pause(self, seconds: float) -> None:
        # Hold this process at once; tell the others through Redis as soon as it answers.
        self._local.pause(seconds)
        self._fallback.pause(seconds)
        if seconds <= 0:
            return
        task = asyncio.get_running_loop().create_task(self._share_pause(seconds))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _share_pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(self._redis_timeout):
                await self._pause_script(keys=self._keys[1:], args=[int(seconds * 1000) + 1])
        except (RedisError, OSError, TimeoutError) as exc:
            # The other processes learn of the pause from their own 429, as they did before sharing.
            log.warning("budget.pause_not_shared", budget=self.name, error=type(exc).__name__)

    async def drain(self) -> None:
        """Wait for pause writes still in flight (tests, shutdown)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def shared_window(
    redis: Redis,
    name: str,
    *,
    limit: int,
    window: float,
    guard: float,
    fallback_share: float,
) -> RateLimiter:
    """A ``SharedWindow`` whose fallback is ``fallback_share`` of ``limit`` (at least one call per window)."""
    fallback = max(1, min(limit, int(limit * fallback_share)))
    return SharedWindow(redis, name, limit=limit, window=window, guard=guard, fallback_limit=fallback)
