"""Direct statements on the tests' own database, bypassing the service: one small pool per test process, on an
event loop of its own thread, kept for the whole run.

Every test empties the tables first, and many tests poll the database while they wait. On a connection of its
own each statement cost about 12 ms of CPU, most of it PostgreSQL forking a backend and tearing it down, and
that happened thousands of times per run. A test's own event loop lives only as long as the test, and a
connection belongs to the loop that opened it, so the pool lives on this loop and callers await across the two.
Only the run's database is served this way (``adopt``); any other (a scratch database, a private server a
fault test restarts) gets a connection per statement, as before.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


class DirectDb:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pools: dict[str, asyncio.Future[asyncpg.Pool]] = {}
        self._adopted: set[str] = set()

    def adopt(self, dsn: str) -> None:
        """Serve ``dsn`` from the pool from now on (until ``release``)."""
        self._adopted.add(dsn)

    async def release(self, dsn: str) -> None:
        """Close the pool of ``dsn`` (before its database is dropped)."""
        self._adopted.discard(dsn)
        if dsn in self._pools:
            await self._on_side(self._close(dsn))

    async def fetch(self, dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
        if dsn not in self._adopted:
            conn = await asyncpg.connect(dsn)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()
        return await self._on_side(self._fetch(dsn, sql, args))

    async def execute(self, dsn: str, script: str) -> None:
        """Run ``script`` (several statements allowed) on ``dsn``, which must be adopted."""
        assert dsn in self._adopted, "only the run's database is served here"
        await self._on_side(self._execute(dsn, script))

    async def _execute(self, dsn: str, script: str) -> None:
        pool = await self._pool(dsn)
        await pool.execute(script)

    async def _fetch(self, dsn: str, sql: str, args: tuple[object, ...]) -> list[asyncpg.Record]:
        pool = await self._pool(dsn)
        return list(await pool.fetch(sql, *args))

    async def _pool(self, dsn: str) -> asyncpg.Pool:
        # Runs on the side loop only, so the look-up and the insert cannot interleave with another caller's.
        made = self._pools.get(dsn)
        if made is None or _failed(made):
            # No statement cache: a test may alter a table (DDL), and a cached plan of another connection
            # would then fail on its next use.
            made = asyncio.ensure_future(
                asyncpg.create_pool(dsn, min_size=1, max_size=4, statement_cache_size=0)
            )
            self._pools[dsn] = made
        # Shielded: a caller cancelled while the pool is being made (a test's timeout) must not cancel it for
        # every later caller; a pool that failed to be made is made again by the next caller.
        return await asyncio.shield(made)

    async def _close(self, dsn: str) -> None:
        made = self._pools.pop(dsn)
        if not _failed(made):
            await (await made).close()

    async def _on_side(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="direct-db", daemon=True).start()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))


def _failed(made: asyncio.Future[asyncpg.Pool]) -> bool:
    return made.done() and (made.cancelled() or made.exception() is not None)


# One per test process.
direct_db = DirectDb()
