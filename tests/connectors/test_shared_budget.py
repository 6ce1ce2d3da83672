"""The shared budget holds over separate Redis clients (as separate processes), shares pauses, falls back to a
local share while Redis is unreachable, and comes back to Redis when it answers again."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from app.connectors.shared_budget import KEY_PREFIX, SharedWindow, shared_window
from app.context import ProcessContext
from app.servers import free_port
from tests.conftest import REDIS_URL
from tests.faults.support import CuttableProxy, start_private_redis
from tests.support.limits import max_in_window


@pytest.fixture
def name() -> str:
    return f"test:{uuid.uuid4().hex}"


async def _hammer(
    window: SharedWindow,
    calls: int,
    stamps: list[float],
    owned: list[tuple[float, int]] | None = None,
    owner: int = 0,
) -> None:
    """Sequential calls, each in its own task (as full-sync fetches are); records when each was granted (and,
    with ``owned``, by which instance)."""

    async def call() -> None:
        await window.acquire()
        now = time.monotonic()
        stamps.append(now)
        if owned is not None:
            owned.append((now, owner))

    for _ in range(calls):
        await asyncio.create_task(call())


async def test_instances_on_separate_clients_never_exceed_the_limit_together(
    clients: list[aioredis.Redis], name: str
) -> None:
    limit, window = 6, 0.2
    budgets = [SharedWindow(c, name, limit=limit, window=window, fallback_limit=3) for c in clients]
    stamps: list[float] = []
    owned: list[tuple[float, int]] = []
    start = time.monotonic()
    # Each instance alone would grant 6 per window (its local window); four of them, two fetchers each.
    await asyncio.gather(*(_hammer(b, 6, stamps, owned, i) for i, b in enumerate(budgets) for _ in range(2)))
    elapsed = time.monotonic() - start
    stamps.sort()
    owned.sort()
    assert len(stamps) == 48
    assert max_in_window(stamps, window) <= limit
    # Call n+limit comes a window after call n returned (here: right after it was granted), whoever made
    # either: each process reports its calls' return to Redis.
    assert all(b - a >= window - 0.01 for a, b in zip(stamps, stamps[limit:], strict=False))
    assert len({who for _, who in owned}) == 4
    # 48 calls at 6 per window: seven waits, and not much more (no starvation, no busy spinning).
    assert 7 * window - 0.05 <= elapsed < 7 * window + 0.8
    assert not any(b.fallback_active for b in budgets)


async def test_one_process_alone_keeps_the_whole_rate(clients: list[aioredis.Redis], name: str) -> None:
    """A process alone on a budget keeps the whole rate: sharing costs it nothing."""
    limit, window = 6, 0.2
    budget = SharedWindow(clients[0], name, limit=limit, window=window, fallback_limit=3)
    stamps: list[float] = []
    start = time.monotonic()
    await asyncio.gather(*(_hammer(budget, 6, stamps) for _ in range(4)))
    elapsed = time.monotonic() - start
    assert len(stamps) == 24
    assert max_in_window(sorted(stamps), window) <= limit
    # 24 calls at 6 per window: three waits of the window.
    assert elapsed < 3 * window + 0.2


async def test_a_pause_set_by_one_instance_holds_the_others(clients: list[aioredis.Redis], name: str) -> None:
    one, other = (SharedWindow(c, name, limit=10, window=1.0, fallback_limit=5) for c in clients[:2])
    one.pause(0.4)
    await one.drain()
    one.pause(0.05)  # a shorter pause never shortens the longer one
    await one.drain()
    assert await clients[2].pttl(f"{KEY_PREFIX}{name}:pause") > 300
    start = time.monotonic()
    await other.acquire()
    assert time.monotonic() - start >= 0.3


async def test_a_closed_budget_starts_no_write_when_a_call_task_ends(
    clients: list[aioredis.Redis], name: str
) -> None:
    """At shutdown the budget is closed before its Redis client: a call task that ends afterwards (one the
    stop cancelled) must not start a write that would outlive the client (left pending when the loop ends)."""

    async def one_call(budget: SharedWindow, *, close_before_it_ends: bool) -> None:
        granted, release = asyncio.Event(), asyncio.Event()

        async def call() -> None:
            await budget.acquire()
            granted.set()
            await release.wait()

        task = asyncio.create_task(call())
        await granted.wait()
        if close_before_it_ends:
            await budget.close()
        release.set()
        await task
        await asyncio.sleep(0)  # the task's done callbacks have run

    open_budget = SharedWindow(clients[0], name, limit=5, window=1.0, fallback_limit=2)
    await one_call(open_budget, close_before_it_ends=False)
    assert open_budget._writes  # open: the call's end is reported to Redis in the background
    await open_budget.drain()

    closed = SharedWindow(clients[0], name, limit=5, window=1.0, fallback_limit=2)
    await one_call(closed, close_before_it_ends=True)
    assert not closed._writes
    closed.pause(1.0)  # a pause after closing holds this process only
    assert not closed._writes


async def test_keys_expire_after_the_window(clients: list[aioredis.Redis], name: str) -> None:
    budget = SharedWindow(clients[0], name, limit=3, window=0.2, fallback_limit=1, cap=0.2)
    await budget.acquire()
    budget.pause(0.1)
    await budget.drain()
    grants, pause = f"{KEY_PREFIX}{name}", f"{KEY_PREFIX}{name}:pause"
    assert 0 < await clients[0].pttl(grants) <= 1400  # window + cap + a second
    assert 0 < await clients[0].pttl(pause) <= 101
    await asyncio.sleep(1.5)
    assert await clients[0].exists(grants, pause) == 0


async def test_a_returned_call_counts_from_its_return(clients: list[aioredis.Redis], name: str) -> None:
    """A call in flight counts until grant + cap; once its task asks again (or ends), Redis scores it when it
    returned, so the next process's call waits a window after that return, not after the grant."""
    budget = SharedWindow(clients[0], name, limit=1, window=0.2, fallback_limit=1, cap=5.0)
    other = SharedWindow(clients[1], name, limit=1, window=0.2, fallback_limit=1, cap=5.0)
    grants = f"{KEY_PREFIX}{name}"

    async def one_call() -> None:
        await budget.acquire()
        ((_, in_flight),) = await clients[2].zrange(grants, 0, -1, withscores=True)
        assert in_flight > time.time() * 1e6 + 4e6  # grant + cap: still counting
        await asyncio.sleep(0.1)  # the call's round trip; the task then ends (the call returned)

    await asyncio.create_task(one_call())
    await asyncio.sleep(0.01)  # the task's done callbacks (ours among them) run after its awaiter wakes
    await budget.drain()
    ((_, returned),) = await clients[2].zrange(grants, 0, -1, withscores=True)
    assert abs(returned - time.time() * 1e6) < 0.5e6  # scored at its return
    start = time.monotonic()
    await other.acquire()
    assert 0.1 <= time.monotonic() - start < 0.5  # a window after the return, not the 5-s cap


async def test_a_call_said_returned_counts_from_then_while_its_task_works_on(
    clients: list[aioredis.Redis], name: str
) -> None:
    budget = SharedWindow(clients[0], name, limit=1, window=0.2, fallback_limit=1, cap=5.0)
    other = SharedWindow(clients[1], name, limit=1, window=0.2, fallback_limit=1, cap=5.0)
    said = asyncio.Event()

    async def call_then_decode() -> None:
        await budget.acquire()
        await asyncio.sleep(0.05)  # the call's round trip
        budget.returned()
        said.set()
        await asyncio.sleep(5.0)  # decoding what came back, still in the task

    holder = asyncio.create_task(call_then_decode())
    await said.wait()
    await budget.drain()
    start = time.monotonic()
    await other.acquire()
    holder.cancel()
    assert time.monotonic() - start < 0.5  # a window after the return, not the 5-s cap or the task's end


async def test_unreachable_redis_falls_back_to_the_local_share(name: str) -> None:
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    budget = SharedWindow(dead, name, limit=6, window=0.2, fallback_limit=3, retry_after=0.1)
    stamps: list[float] = []
    try:
        start = time.monotonic()
        await asyncio.gather(_hammer(budget, 6, stamps), _hammer(budget, 6, stamps))
        elapsed = time.monotonic() - start
    finally:
        await dead.aclose()
    stamps.sort()
    assert budget.fallback_active
    # Every process may have spent the whole window just before Redis went away: the first fallback call
    # waits that window out.
    assert stamps[0] - start >= 0.2 - 0.01
    assert max_in_window(stamps, 0.2) <= 3  # the share, not the full limit
    assert elapsed < 1.5  # 12 calls at 3 per window: it goes on (three waits), it does not stop
    assert budget.outages == 1  # one outage (one warning), though Redis was retried every 0.1 s


async def test_fallback_while_redis_is_down_and_back_to_redis_when_it_returns(
    tmp_path: Path, name: str
) -> None:
    server = start_private_redis(tmp_path)
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    # A window long enough that the last fallback calls are still in it when Redis is back.
    budget = SharedWindow(client, name, limit=4, window=0.5, fallback_limit=2, retry_after=0.1)
    try:
        await budget.acquire()
        assert not budget.fallback_active
        server.stop()
        stamps: list[float] = []
        await _hammer(budget, 6, stamps)
        assert budget.fallback_active
        assert max_in_window(stamps, 0.5) <= 2
        server.start()
        await asyncio.sleep(0.15)
        await budget.acquire()
        assert not budget.fallback_active
        assert budget.outages == 1
        # The grant was Redis's again, and the calls made on the fallback within the window came with it, so
        # that they count there as they count at the provider.
        members = [m.decode() for m in await client.zrange(f"{KEY_PREFIX}{name}", 0, -1)]
        fallback = [m for m in members if ":fb" in m]
        assert len(members) == len(fallback) + 1
        assert 1 <= len(fallback) <= 2
    finally:
        await client.aclose()
        server.stop()


_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import redis.asyncio as aioredis
    from app.connectors.shared_budget import SharedWindow

    async def main() -> None:
        url, name, calls, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        client = aioredis.Redis.from_url(url)
        budget = SharedWindow(client, name, limit=5, window=0.2, fallback_limit=2)
        stamps = []

        async def call() -> None:
            await budget.acquire()
            stamps.append(time.monotonic())

        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        for _ in range(calls):
            await asyncio.create_task(call())
        assert not budget.fallback_active
        await client.aclose()
        print(json.dumps(stamps))

    asyncio.run(main())
    """
)


def test_two_os_processes_share_one_budget(name: str) -> None:
    # CLOCK_MONOTONIC is one clock for every process of the machine, so the stamps compare.
    start_at = time.monotonic() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, REDIS_URL, name, "10", str(start_at)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[2],
        )
        for _ in range(2)
    ]
    stamps: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        stamps.extend(json.loads(out))
    stamps.sort()
    assert len(stamps) == 20
    assert max_in_window(stamps, 0.2) <= 5


async def test_the_process_context_hands_out_shared_budgets(ctx: ProcessContext) -> None:
    kommo, unisender = ctx.kommo_limiter("client-1"), ctx.unisender_limiter("keyhash")
    assert isinstance(kommo, SharedWindow)
    assert isinstance(unisender, SharedWindow)
    await kommo.acquire()
    await unisender.acquire()
    assert ctx.budget_redis is not None
    assert await ctx.budget_redis.zcard(f"{KEY_PREFIX}kommo:client-1") == 1
    assert await ctx.budget_redis.zcard(f"{KEY_PREFIX}unisender:keyhash") == 1


async def test_a_share_below_one_call_per_window_is_spread_not_rounded_up(name: str) -> None:
    """Eight processes with 1/8 of 4 calls per 0.2 s each get one call per 0.4 s, not one per window (which
    would be 8 per window together, twice the limit)."""
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    budget = shared_window(dead, name, limit=4, window=0.2, fallback_share=0.125)
    stamps: list[float] = []
    try:
        await _hammer(budget, 3, stamps)  # type: ignore[arg-type]
    finally:
        await dead.aclose()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.4 - 0.01


async def test_a_late_reply_is_asked_again_and_only_a_silent_redis_means_the_fallback(name: str) -> None:
    """A busy process reads Redis's replies late; taking that for an outage would add its local share to the
    other processes' whole window. One late reply is asked again; only ``late_limit`` in a row fall back."""
    parts = urlsplit(REDIS_URL)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}{parts.path}")
    budget = SharedWindow(
        client, name, limit=4, window=0.5, fallback_limit=2, redis_timeout=0.3, retry_after=0.1, late_limit=3
    )
    loop = asyncio.get_running_loop()
    try:
        await budget.acquire()
        proxy.freeze()
        loop.call_later(0.45, proxy.thaw)  # silent for longer than one reply may take, not for three
        started = time.monotonic()
        # Three calls waiting together see the one stall: one late reply each, not three for the process.
        await asyncio.gather(*(asyncio.create_task(budget.acquire()) for _ in range(3)))
        assert time.monotonic() - started >= 0.3  # they waited for Redis ...
        assert (budget.fallback_active, budget.outages) == (False, 0)  # ... and Redis granted the calls
        proxy.freeze()  # now silent for good: three late replies, then the fallback
        started = time.monotonic()
        await budget.acquire()
        assert budget.fallback_active
        assert budget.outages == 1
        assert time.monotonic() - started >= 3 * 0.3
    finally:
        proxy.thaw()
        await client.aclose()
        await proxy.close()
