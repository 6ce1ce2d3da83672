"""Rate budgets shared by every process and machine, held in Redis by atomic scripts.

Each budget is a sorted set ``contactsync:budget:<name>`` of calls scored with Redis's own clock (``TIME``
inside the scripts), so the machines' clocks never enter the count, plus a pause key
``contactsync:budget:<name>:pause`` that a provider's 429/403 sets for everyone. When Redis does not answer, a
process spends a conservative local share of the limit instead, and tries Redis again a second later.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import uuid
from collections.abc import Coroutine

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.connectors.ratelimit import RateLimiter, RoundTripWindow, call_of, is_bulk

log = structlog.get_logger()

KEY_PREFIX = "contactsync:budget:"

# KEYS: the calls (sorted set), the pause key, the live-waiting mark. ARGV: limit, window (µs), cap (µs), units,
# owner, serial, bulk (1/0), the mark's lifetime (ms), then the ages (µs) of calls made on the fallback during an
# outage. A call's score is when it *returned* (reported by _RETURNED), or, while it is in flight, its grant time
# + cap; it counts until score + window. Returns 0 when ``units`` calls were granted, else the µs to wait (the
# pause's rest, or until enough calls stop counting). A live caller refused sets the mark, which holds bulk
# callers back until it is granted (and clears it) or the mark lapses. Scores are µs since the epoch: < 2^53,
# exact as a Redis double.
_ACQUIRE = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local units = tonumber(ARGV[4])
local prefix = ARGV[5] .. ':' .. ARGV[6] .. ':'
local bulk = ARGV[7] == '1'
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return paused * 1000
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 9, #ARGV do
  redis.call('ZADD', KEYS[1], now - tonumber(ARGV[i]), prefix .. 'fb' .. (i - 8))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local held = redis.call('ZCARD', KEYS[1])
local yielding = bulk and redis.call('PTTL', KEYS[3]) > 0
if held + units <= limit and not yielding then
  for i = 1, units do
    redis.call('ZADD', KEYS[1], now + cap, prefix .. i)
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil((window + cap) / 1000) + 1000)
  if not bulk then
    redis.call('DEL', KEYS[3])
  end
  return 0
end
if not bulk then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[8])
end
if held + units <= limit then
  return 10000
end
local freeing = redis.call('ZRANGE', KEYS[1], held + units - limit - 1, held + units - limit - 1, 'WITHSCORES')
return math.max(1000, tonumber(freeing[2]) + window - now + 1)
"""

# KEYS: the calls. ARGV: members whose calls returned: scored now, never later than they were (LT).
_RETURNED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 'LT', now, ARGV[i])
end
return 0
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
    """At most ``limit`` calls in any ``window`` seconds over every process using ``name`` on one Redis, as
    the provider counts them (by arrival).

    The rule of ``RoundTripWindow``, kept in Redis: call n+limit is granted ``window`` after call n *returned*
    (reported to Redis by the process that made it: when the client says the answer came, or else when its
    task asks for the next call or ends), so it
    arrives at least ``window`` after call n arrived, whatever the delays in either process, the network or
    the provider's queue. A call in flight counts as returning ``cap`` seconds after its grant at the latest.
    Calls go through this process's own ``RoundTripWindow`` first, so a process alone never waits on Redis
    for its own calls.

    Live callers go first here too: a live caller that Redis refuses marks the budget, and bulk callers in every
    process wait while the mark stands (the live caller clears it when granted; it lapses if the caller left).

    A Redis error that says it is down (a refused or broken connection), or ``late_limit`` replies in a row that
    did not come within ``redis_timeout``, makes this process, after one ``window`` (the other processes may
    have spent the whole of it just before), spend a local ``fallback_limit`` per
    ``fallback_window`` (a share, so that a few processes falling back together stay under the provider's
    limit) until Redis answers again; it retries Redis ``retry_after`` seconds after the failure, and its first
    call to Redis hands it the calls it made on the fallback meanwhile. A single late reply is asked again, not
    taken for an outage: a process whose event loop is saturated reads Redis's prompt replies late, and the
    other processes still draw from Redis, so its local share would come on top of their whole window (the
    429s a 4-worker benchmark drew on a loaded box). Waiting for Redis never overshoots; it only waits.
    """

    def __init__(
        self,
        redis: Redis,
        name: str,
        *,
        limit: int,
        window: float,
        fallback_limit: int,
        fallback_window: float | None = None,
        cap: float = 2.0,
        retry_after: float = 1.0,
        redis_timeout: float = 1.0,
        late_limit: int = 3,
    ) -> None:
        if limit < 1 or window <= 0 or cap <= 0 or not 1 <= fallback_limit <= limit:
            raise ValueError("limit >= 1, window > 0, cap > 0 and 1 <= fallback_limit <= limit")
        self.name = name
        self.outages = 0  # times Redis became unreachable for this budget
        self._limit = limit
        self._window = window
        self._window_us = int(window * 1_000_000)
        self._cap_us = int(cap * 1_000_000)
        # Waits computed from calls still in flight are an upper bound: look again sooner.
        self._poll = max(0.02, window / 20)
        self._keys = [f"{KEY_PREFIX}{name}", f"{KEY_PREFIX}{name}:pause", f"{KEY_PREFIX}{name}:live"]
        # A live waiter renews its mark at each look (at least every ``_poll``); one that went away lets bulk
        # work go on after this long.
        self._mark_ms = int((self._poll * 2 + 0.5) * 1000)
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._returned_script = redis.register_script(_RETURNED)
        self._pause_script = redis.register_script(_PAUSE)
        self._local = RoundTripWindow(limit, window, cap=cap)
        self._fallback = RoundTripWindow(fallback_limit, fallback_window or window, cap=cap)
        self._fallback_grants: collections.deque[float] = collections.deque()  # monotonic, in an outage
        self._fallback_limit = fallback_limit
        self._retry_after = retry_after
        self._redis_timeout = redis_timeout
        self._down_until = 0.0
        self._outage = False
        self._late_limit = late_limit  # replies in a row that did not come in time, per call, that mean down
        self._instance = uuid.uuid4().hex
        self._serial = itertools.count()
        self._open: dict[asyncio.Task[object], list[str]] = {}  # calls in flight, by the task that made them
        self._writes: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def fallback_active(self) -> bool:
        """True while this process spends its local share (Redis failed and has not answered since)."""
        return self._outage

    async def acquire(self, cost: float = 1.0) -> None:
        units, task = call_of(cost, self._limit, "SharedWindow")
        self._returned(task)  # this task asks again, so its previous call has returned
        await self._local.acquire(cost)
        # Each pass either grants or sleeps (at most ``_poll``), or leaves for the fallback. Late replies are
        # counted per call: many calls waiting together all see one stall, which is one late reply, not many.
        late = 0
        while time.monotonic() >= self._down_until:
            serial = next(self._serial)
            try:
                async with asyncio.timeout(self._redis_timeout):
                    wait_us = await self._try(units, serial)
            except (RedisError, OSError, TimeoutError) as exc:
                late += 1
                if _late(exc) and late < self._late_limit:
                    # Probably only late: a busy process reads a prompt reply late. Ask again instead of
                    # spending a local share on top of what the other processes spend through Redis.
                    continue
                self._went_down(exc)
                break
            late = 0
            if self._outage:
                self._outage = False
                log.info("budget.redis_recovered", budget=self.name)
            if wait_us <= 0:
                self._track(task, [f"{self._instance}:{serial}:{i}" for i in range(1, units + 1)])
                return
            await asyncio.sleep(min(wait_us / 1_000_000, self._poll))
        await self._fallback.acquire(cost)
        now = time.monotonic()
        self._fallback_grants.extend([now] * units)
        while self._fallback_grants and now - self._fallback_grants[0] > self._window:
            self._fallback_grants.popleft()

    async def _try(self, units: int, serial: int) -> int:
        args: list[str | int] = [self._limit, self._window_us, self._cap_us, units, self._instance, serial]
        args += [int(is_bulk()), self._mark_ms]
        now = time.monotonic()
        args.extend(int((now - t) * 1_000_000) for t in self._fallback_grants if now - t < self._window)
        wait = int(await self._acquire_script(keys=self._keys, args=args))
        self._fallback_grants.clear()  # Redis holds them now
        return wait

    def returned(self) -> None:
        task = asyncio.current_task()
        if task is None:
            return
        self._returned(task)
        self._local.returned()
        self._fallback.returned()

    def _track(self, task: asyncio.Task[object], members: list[str]) -> None:
        if task not in self._open:
            task.add_done_callback(self._returned)
        self._open.setdefault(task, []).extend(members)

    def _returned(self, task: asyncio.Task[object]) -> None:
        """Tell Redis the task's calls returned (in the background: the next grant need not wait for it)."""
        members = self._open.pop(task, None)
        if members:
            self._background(self._report_returned(members))

    async def _report_returned(self, members: list[str]) -> None:
        try:
            async with asyncio.timeout(self._redis_timeout):
                await self._returned_script(keys=self._keys[:1], args=members)
        except (RedisError, OSError, TimeoutError):
            pass  # the calls then count until their cap: later grants, never more calls

    def _went_down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_after
        if not self._outage:
            self._outage = True
            self.outages += 1
            # Every process may have spent the whole shared window just before Redis went away: the fallback
            # grants nothing until that window has passed, so falling back never adds to a full one.
            self._fallback.pause(self._window)
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
        if seconds > 0:
            self._background(self._share_pause(seconds))

    def _background(self, work: Coroutine[object, object, None]) -> None:
        if self._closed:
            # Shutting down: a call task ending now (one cancelled as the process stops) must not start a write
            # that would outlive the Redis client; its grant counts until its cap instead.
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _share_pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(self._redis_timeout):
                await self._pause_script(keys=self._keys[1:2], args=[int(seconds * 1000) + 1])
        except (RedisError, OSError, TimeoutError) as exc:
            # The other processes learn of the pause from their own 429, as they did before sharing.
            log.warning("budget.pause_not_shared", budget=self.name, error=type(exc).__name__)

    async def drain(self) -> None:
        """Wait for pause and return writes still in flight (tests)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def close(self) -> None:
        """Finish the writes in flight and start no more (shutdown, before the Redis client closes)."""
        self._closed = True
        await self.drain()


def _late(exc: BaseException) -> bool:
    """No reply in time (ours or the client's socket timeout), as opposed to a connection that failed."""
    return isinstance(exc, TimeoutError | RedisTimeoutError)


def shared_window(
    redis: Redis, name: str, *, limit: int, window: float, fallback_share: float
) -> RateLimiter:
    """A ``SharedWindow`` whose fallback spends ``fallback_share`` of ``limit`` per ``window``; a share below one
    call per window becomes one call per longer window (1/8 of 7 a second: one call every 1.14 s), never a
    rounded-up whole call, so N processes with a share of 1/N stay within the limit together."""
    per_window = limit * fallback_share
    if per_window >= 1:
        return SharedWindow(
            redis, name, limit=limit, window=window, fallback_limit=min(limit, int(per_window))
        )
    return SharedWindow(
        redis, name, limit=limit, window=window, fallback_limit=1, fallback_window=window / per_window
    )
