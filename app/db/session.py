"""Engine and sessions. One transaction owner per unit of work.

- API: the ``get_session`` dependency commits when the endpoint returns and rolls back on error; jobs queued
  during the request are sent to Redis only after that commit.
- Jobs: ``async with db.session_scope() as session:`` does the same.
Services and repositories only ``flush()``; they never commit.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db.sql import json_dumps, json_loads

log = structlog.get_logger(__name__)

AfterCommit = Callable[[], Awaitable[Any]]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DbTimeouts:
    """Deadlines on every database path, so a database that stops answering (a network partition: the
    connections stay open, nothing comes back) fails callers in seconds instead of holding them for the whole
    outage. ``statement`` is PostgreSQL's own ``statement_timeout``; the client gives up one second later,
    for the case where the server's answer, even its cancellation error, never arrives. 0 disables both."""

    connect: float = 5.0
    statement: float = 10.0
    pool: float = 5.0


def create_engine(
    url: str, *, pool_size: int = 20, pre_ping: bool = True, timeouts: DbTimeouts | None = None
) -> AsyncEngine:
    """The process's engine. ``pre_ping`` costs a round trip per checkout; without it, the first statement
    on a connection broken by a PostgreSQL restart fails, and SQLAlchemy then recycles the whole pool.

    ``hide_parameters``: a failing statement's exception text (which the worker's and the API's error logs
    print) would otherwise list its bound values, i.e. contact names and addresses by the page."""
    timeouts = timeouts or DbTimeouts()
    connect_args: dict[str, Any] = {"timeout": timeouts.connect}
    if timeouts.statement > 0:
        connect_args["command_timeout"] = timeouts.statement + 1.0
        connect_args["server_settings"] = {"statement_timeout": str(int(timeouts.statement * 1000))}
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        # No overflow: overflow connections are closed when returned, so a burst above the pool size would
        # open (and TLS-negotiate) a new PostgreSQL connection per request; waiting for a pooled one is cheaper.
        max_overflow=0,
        pool_pre_ping=pre_ping,
        pool_timeout=timeouts.pool,
        connect_args=connect_args,
        hide_parameters=True,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
    )
    event.listen(engine.sync_engine, "handle_error", _hide_values)
    event.listen(engine.sync_engine, "handle_error", _discard_timed_out_connection)
    event.listen(engine.sync_engine, "invalidate", _abort_invalidated)
    return engine


# asyncpg's own error for a value it cannot encode quotes the value: "invalid input for query argument $1:
# 'Mary…' (…)". ``hide_parameters`` does not reach the driver's text.
_ARGUMENT_ERROR = re.compile(r"invalid input for query argument (\$\d+)")


def _hide_values(context: ExceptionContext) -> None:
    """Keep bound values out of the driver's exceptions too (a logged traceback prints the whole chain):
    PostgreSQL's DETAIL, which asyncpg appends to its message, shows the refused row or key ("Failing row
    contains (…)", "Key (…)=(…) already exists"); and asyncpg's message for a value it cannot encode quotes
    it, so that one is cut down to the argument's number and the reason's class. The wording kept is what
    the API's error handler recognises as a refused value (400)."""
    chain: list[BaseException] = []
    exc: BaseException | None = context.original_exception
    while exc is not None and len(chain) < 4:
        chain.append(exc)
        exc = exc.__cause__
    root = chain[-1]  # the innermost error, e.g. the encoder's UnicodeEncodeError or OverflowError
    reason = "not storable" if _ARGUMENT_ERROR.search(_message(root)) else type(root).__name__
    if context.sqlalchemy_exception is not None:
        chain.append(context.sqlalchemy_exception)
    for item in chain:
        if getattr(item, "detail", None):
            item.detail = None  # type: ignore[attr-defined]
        text = _message(item)
        found = _ARGUMENT_ERROR.search(text)
        if found is not None:
            hidden = f"invalid input for query argument {found.group(1)} ({reason}; value not shown)"
            item.args = (text[: found.start()] + hidden,)


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else ""


def _discard_timed_out_connection(context: ExceptionContext) -> None:
    # The driver's own deadline passed: the connection is mid-statement (asyncpg is still trying to cancel it),
    # so it is discarded like a broken one rather than returned to the pool. Only this one: the others may
    # be fine (a slow statement), and if they are not, their own deadlines will discard them.
    if isinstance(context.original_exception, TimeoutError):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def _abort_invalidated(dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
    # An invalidated connection is never used again, so it is closed at once: SQLAlchemy would close it
    # gracefully, and asyncpg first waits for the cancellation of whatever ran on it and for the server's
    # goodbye, which under a network partition never come (seconds per connection, in the caller's time).
    driver = getattr(dbapi_connection, "driver_connection", None)
    terminate = getattr(driver, "terminate", None)
    if terminate is not None:
        terminate()


def is_timeout(exc: BaseException) -> bool:
    """A database deadline passed: ours (connect, statement, pool wait) or PostgreSQL's statement_timeout
    (SQLSTATE 57014). The database is slow or unreachable; the request may be retried."""
    if isinstance(exc, TimeoutError | SATimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(
            getattr(orig, "__cause__", None), "sqlstate", None
        )
        return sqlstate == "57014"
    return False


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

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
            await session.close()
        await run_after_commit(session)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection on which each statement commits by itself: for units of work of one statement."""
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    async def run_autocommit(self, work: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        """Run ``work`` on an autocommit connection, once more on a fresh one if the connection was dead.

        ``work`` must be safe to repeat (webhook intake is: its insert is idempotent by dedupe key). The retry
        makes a PostgreSQL restart invisible to callers once the server is back, without a ping per checkout.
        """
        try:
            async with self.autocommit() as conn:
                return await work(conn)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.info("db.reconnect", error=type(exc.orig).__name__)
        async with self.autocommit() as conn:
            return await work(conn)

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
