"""The few places where PostgreSQL and SQLite SQL differ, behind one helper."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, Table
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
