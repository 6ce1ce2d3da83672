"""Which older code may run on a newer schema, so that an upgrade can roll.

Each migration from 0012 on says, in a row of ``schema_compat``, the oldest code revision that still runs on
the schema it leaves: its own previous revision when it only adds (tables, nullable columns, indexes) what
older code never reads, or its own revision when it drops, renames or tightens something older code uses. A
process whose code is behind the database then accepts the database (instead of refusing to start and
reporting not ready) exactly when the database's revision names it compatible. Revisions are four-digit
numbers in migration order (checked by the tests), so "older" is a comparison of the ids.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

TABLE = "schema_compat"
REVISION = re.compile(r"^\d{4}$")


def declare(revision: str, *, oldest_code: str) -> None:
    """In a migration's ``upgrade()``: code from ``oldest_code`` on runs on the schema at ``revision``."""
    if not (REVISION.match(revision) and REVISION.match(oldest_code)) or oldest_code > revision:
        raise ValueError("revisions are four digits, and oldest_code is at most the migration's own")
    op.execute(
        sa.text(
            f"INSERT INTO {TABLE} (revision, oldest_code) VALUES (:revision, :oldest) "
            "ON CONFLICT (revision) DO UPDATE SET oldest_code = EXCLUDED.oldest_code"
        ).bindparams(revision=revision, oldest=oldest_code)
    )


def retract(revision: str) -> None:
    """In a migration's ``downgrade()``: forget what ``declare`` said."""
    op.execute(sa.text(f"DELETE FROM {TABLE} WHERE revision = :revision").bindparams(revision=revision))


async def oldest_code(engine: AsyncEngine, revision: str) -> str | None:
    """The oldest code revision the schema at ``revision`` accepts; None when it names none (a migration
    before 0012, or a database without the table)."""
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                sa.text(f"SELECT oldest_code FROM {TABLE} WHERE revision = :revision"),
                {"revision": revision},
            )
            value = found.scalar_one_or_none()
    except DBAPIError:
        return None
    return None if value is None else str(value)
