"""Which older code may run on a newer schema, so that an upgrade can roll.

Each migration from 0012 on says, in a row of ``schema_compat``, the oldest code revision that still runs on
the schema it leaves: a migration that only adds (tables, nullable columns, indexes) what older code never
reads keeps the previous migration's answer (``additive``: whatever ran before still runs), one that drops,
renames or tightens something older code uses names itself (``breaking``). So the answer never decreases
along the chain (the tests check it), and the database's own revision's row answers for every migration up
to it. A process whose code is behind the database accepts the database (instead of refusing to start and
reporting not ready) exactly when that row names its code. Revisions are four-digit numbers in migration
order (checked by the tests), so "older" is a comparison of the ids.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

TABLE = "schema_compat"
REVISION = re.compile(r"^\d{4}$")
UNDEFINED_TABLE = "42P01"


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


def additive(revision: str, *, previous: str) -> None:
    """In the ``upgrade()`` of a migration that only adds: the code that ran on ``previous`` still runs."""
    op.execute(
        sa.text(
            f"INSERT INTO {TABLE} (revision, oldest_code) SELECT :revision, oldest_code FROM {TABLE} "
            "WHERE revision = :previous ON CONFLICT (revision) DO UPDATE SET oldest_code = EXCLUDED.oldest_code"
        ).bindparams(revision=revision, previous=previous)
    )


def breaking(revision: str) -> None:
    """In the ``upgrade()`` of a migration that drops, renames or tightens what older code uses."""
    declare(revision, oldest_code=revision)


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
    except ProgrammingError as exc:
        if _sqlstate(exc) == UNDEFINED_TABLE:
            return None  # a schema from before 0012
        raise
    return None if value is None else str(value)


def _sqlstate(exc: ProgrammingError) -> str | None:
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return str(code) if code is not None else None
