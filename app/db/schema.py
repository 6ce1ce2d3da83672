"""Alembic helpers: upgrade to head, and refuse to start when the schema is behind."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import compat

ROOT = Path(__file__).resolve().parents[2]


class SchemaOutOfDate(RuntimeError):
    pass


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["configure_logging"] = False
    return cfg


@functools.cache
def head_revision() -> str | None:
    """The code's own head revision, read once per process: alembic executes every migration script to read
    its revision (15 ms), and the schema is checked at each start and by every readiness probe."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Run migrations (blocking; call from a thread when inside an event loop)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, database_url, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    def _read(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)


async def check_schema_current(engine: AsyncEngine) -> None:
    """Raise SchemaOutOfDate with a clear message unless this code runs on the database's schema: at the
    code's alembic head, or at a newer revision that accepts this code (``app.db.compat``)."""
    await check_schema(engine, head_revision())


async def check_schema(engine: AsyncEngine, code_head: str | None) -> None:
    """``check_schema_current`` for code whose own head revision is ``code_head``."""
    current = await current_revision(engine)
    if current == code_head:
        return
    if current is None or code_head is None or not _ordered(current, code_head) or current < code_head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, code expects {code_head}: run `contactsync migrate`"
        )
    oldest = await compat.oldest_code(engine, current)
    if oldest is None or code_head < oldest:
        raise SchemaOutOfDate(
            f"database schema is at {current}, newer than this code ({code_head}), and it runs code from "
            f"{oldest or current} on only: deploy the release that migrated it"
        )


def _ordered(*revisions: str) -> bool:
    return all(compat.REVISION.match(r) for r in revisions)
