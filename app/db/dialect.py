"""The few places where PostgreSQL and SQLite SQL differ, behind one helper."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, TypeVar

from sqlalchemy import Select, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

_S = TypeVar("_S", bound=Select[Any])


def insert(session: AsyncSession, table: Table | Any) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing``/``on_conflict_do_update`` on both dialects."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"dialect {name} is not supported")


def skip_locked(session: AsyncSession, stmt: _S) -> _S:
    """``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers, so it needs no row locks."""
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --- transaction-scoped named locks ----------------------------------------------------------------------

_local_locks: dict[str, asyncio.Lock] = {}


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def xact_lock(session: AsyncSession, name: str, *, wait: bool = True) -> bool:
    """Take a named lock until the session's transaction ends; with ``wait=False`` return False if it is held.

    PostgreSQL: advisory transaction locks, shared by every process. SQLite (embedded, one process): an
    in-process lock released when the session commits, rolls back or closes.
    """
    if is_postgres(session):
        if wait:
            await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
            return True
        got = (
            await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)})
        ).scalar()
        return bool(got)
    held: set[str] = session.info.setdefault("local_locks", set())
    if name in held:
        return True
    lock = _local_locks.setdefault(name, asyncio.Lock())
    if not wait and lock.locked():
        return False
    await lock.acquire()
    held.add(name)
    return True


def release_local_locks(session: AsyncSession) -> None:
    for name in session.info.pop("local_locks", set()):
        lock = _local_locks.get(name)
        if lock is not None and lock.locked():
            lock.release()
