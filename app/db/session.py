"""Engine and sessions. One transaction owner per unit of work.

- API: the ``get_session`` dependency commits when the endpoint returns and rolls back on error; jobs queued
  during the request are sent to Redis only after that commit.
- Jobs: ``async with db.session_scope() as session:`` does the same.
Services and repositories only ``flush()``; they never commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.db.dialect import release_local_locks

log = structlog.get_logger(__name__)

AfterCommit = Callable[[], Awaitable[Any]]


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # PostgreSQL restarts must not poison the pool
        pool_timeout=10,
    )


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session_scope(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error; after-commit hooks run last."""
        session = self.sessionmaker()
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            session.info.pop("after_commit", None)
            raise
        finally:
            release_local_locks(session)
            await session.close()
        await run_after_commit(session)

    async def dispose(self) -> None:
        await self.engine.dispose()


def after_commit(session: AsyncSession, hook: AfterCommit) -> None:
    """Run ``hook`` once the session's transaction has committed (e.g. enqueue a job for the new row)."""
    session.info.setdefault("after_commit", []).append(hook)


async def run_after_commit(session: AsyncSession) -> None:
    hooks: list[AfterCommit] = session.info.pop("after_commit", [])
    for hook in hooks:
        try:
            await hook()
        except Exception as exc:
            # The work is committed in PostgreSQL; the sweeper will find it. Redis is only a wake-up signal.
            log.warning("after_commit.failed", error=repr(exc))
