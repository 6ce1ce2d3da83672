"""SQL building blocks the repositories share: chunking, bulk inserts through ``unnest``, one-probe-per-key
lookups, executemany, ANALYZE, statements on the bare driver. Each repository writes its own statements with
these; none writes them again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy import Executable, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

CHUNK = 500  # bounds IN-lists, key arrays and executemany batches
_T = TypeVar("_T")


def json_dumps(value: Any) -> str:
    """JSON text of a column value, compact, non-ASCII as is (the engine's serializer too). orjson: a full
    sync or a spec change's walk writes and reads several JSON columns per address, and the standard
    library's codec was a tenth of the worker's time there. A value orjson refuses (a lone surrogate, which
    the boundary cleaning should have removed) is written as the standard library writes it."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


json_loads = orjson.loads  # the engine's deserializer


def chunks(items: Sequence[_T], size: int = CHUNK) -> Iterable[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def execute_many(session: AsyncSession, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run one parameterised statement for many rows (DBAPI executemany).

    The statement carries no values of its own, so SQLAlchemy compiles it once and serves it from its cache;
    asyncpg prepares it once and pipelines the rows. A multi-row ``.values([...])`` instead builds a new
    statement with one bind parameter per cell every call, and compiling those dominated the full sync.
    """
    for chunk in chunks(rows):
        await session.execute(stmt, [dict(row) for row in chunk])


# Bulk inserts: one array per column, ``INSERT … SELECT … FROM unnest(…)``. One statement and one bind
# parameter per column, whatever the number of rows: less work for SQLAlchemy (no per-row parameter
# processing) and for PostgreSQL (one execution instead of one per row) than executemany
# (docs/benchmarks.md). Column types are PostgreSQL array element types, or "JSON" for JSON columns (sent as
# text and cast).
Columns = tuple[tuple[str, str], ...]


def unnest_insert(table: str, columns: Columns, tail: str) -> str:
    """The text of ``INSERT INTO table (columns) SELECT … FROM unnest(:column arrays…) tail``."""
    names = ", ".join(name for name, _ in columns)
    arrays = ", ".join(f"CAST(:{name} AS {'TEXT' if kind == 'JSON' else kind}[])" for name, kind in columns)
    values = ", ".join(f"CAST(u.{name} AS JSON)" if kind == "JSON" else f"u.{name}" for name, kind in columns)
    return f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({arrays}) AS u({names}) {tail}"


async def insert_unnest(
    session: AsyncSession,
    sql: str,
    columns: Columns,
    rows: Sequence[object],
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Run an ``unnest_insert`` statement for ``rows``, a chunk at a time: each column's value is the row's
    attribute of that name, or the same for every row when ``constants`` holds it."""
    fixed = constants or {}
    for chunk in chunks(rows):
        params: dict[str, list[Any]] = {}
        for name, kind in columns:
            values = [fixed[name]] * len(chunk) if name in fixed else [getattr(row, name) for row in chunk]
            params[name] = [json_dumps(v) for v in values] if kind == "JSON" else values
        await session.execute(text(sql), params)


# Key lookups: one index probe per key, whatever the statistics say.
#
# ``account_id = :a AND key IN (…300 keys…)`` is planned from the table's statistics. While a full sync fills
# fresh (or not yet analysed) tables, or for an account that is new among many, PostgreSQL believes
# ``account_id = :a`` matches a handful of rows, scans the account's rows through the index prefix and
# filters the keys: a cost that grows with every page (measured: 100+ ms per lookup after 10k contacts).
# A LATERAL subquery with equality on every column of an index is one probe per key in any state; its
# ``OFFSET 0`` keeps the planner from flattening it back into a join planned from the same statistics.


def lateral(keys_sql: str, key: str, inner: str, *, lock: bool = False) -> str:
    """``inner`` run once per element of the array parameter ``keys_sql`` (named ``q.{key}`` inside it).

    With ``lock``, the rows found are locked (``FOR UPDATE``) in the order of the keys: sorted keys lock in a
    fixed order, so two transactions locking overlapping sets cannot deadlock.
    """
    fence = " OFFSET 0" + (" FOR UPDATE" if lock else "")
    return f"SELECT r.* FROM unnest({keys_sql}) AS q({key}) CROSS JOIN LATERAL ({inner}{fence}) AS r"


async def analyze(session: AsyncSession, tables: Sequence[str]) -> None:
    """Refresh PostgreSQL's statistics of ``tables`` (ANALYZE samples a bounded number of rows)."""
    await session.execute(text(f"ANALYZE {', '.join(tables)}"))


async def fetch_on_driver(
    conn: AsyncConnection, sql: str, args: Sequence[Any], deadline: float | None = None
) -> list[Any]:
    """Run ``sql`` (``$1``… parameters) on the driver connection under ``conn``, skipping SQLAlchemy's
    per-statement work (for the hottest statements, it costs about as much as the round trip itself).

    ``conn`` must be an autocommit connection: there is no transaction to manage. ``deadline``: seconds for the
    statement on PostgreSQL, by the driver's own timer (TimeoutError after; the engine's statement timeout when
    None). Failures are classified as SQLAlchemy would: a broken connection is discarded and raised as
    ``OperationalError`` (503, and ``Database.run_autocommit`` retries once on a fresh connection).
    """
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection  # asyncpg.Connection
    try:
        rows: list[Any] = await driver.fetch(sql, *args, timeout=deadline)
        return rows
    except (TimeoutError, asyncio.CancelledError):
        # No answer within the driver's deadline, or our caller's deadline cancelled us (webhook intake):
        # the statement is still in flight, so the connection is discarded, not pooled half-used. A timeout
        # is not a dead connection, so it is not retried at once (the database is slow or unreachable).
        await conn.invalidate()
        raise
    except Exception as exc:
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        lost = isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError) or (
            sqlstate.startswith(("08", "57P"))
        )
        await conn.invalidate()
        error = OperationalError if lost else DBAPIError
        raise error(sql, None, exc, connection_invalidated=True) from exc
