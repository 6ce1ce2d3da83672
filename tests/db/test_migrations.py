"""Migrations go down to nothing and up again; the service refuses a schema behind head, and one ahead of it
unless that schema's migration accepts the older code (rolling upgrades)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy import inspect

from app.config import Settings
from app.db.base import Base
from app.db.schema import (
    SchemaOutOfDate,
    check_schema,
    check_schema_current,
    downgrade,
    head_revision,
    upgrade,
)
from app.db.session import create_engine
from app.main import create_app
from app.servers import serve_in_background
from tests.conftest import PG_ADMIN_DSN


@pytest.fixture
async def scratch_pg() -> object:
    name = f"contactsync_scratch_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    yield f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version", "schema_compat"}  # the migrations' own bookkeeping, not models


async def test_upgrade_downgrade_upgrade(scratch_pg: str) -> None:
    url = scratch_pg
    expected = {t.name for t in Base.metadata.sorted_tables}
    await asyncio.to_thread(upgrade, url, "head")
    assert await _tables(url) == expected
    await asyncio.to_thread(downgrade, url, "base")
    assert await _tables(url) == set()
    await asyncio.to_thread(upgrade, url, "head")
    assert await _tables(url) == expected
    engine = create_engine(url)
    await check_schema_current(engine)  # at head: no error
    await engine.dispose()


async def test_app_refuses_to_start_when_schema_is_behind(scratch_pg: str, settings: Settings) -> None:
    behind = settings.model_copy(update={"database_url": scratch_pg})  # never migrated
    engine = create_engine(scratch_pg)
    with pytest.raises(SchemaOutOfDate, match="contactsync migrate"):
        await check_schema_current(engine)
    await engine.dispose()
    app = create_app(behind)
    with pytest.raises(SchemaOutOfDate):
        async with app.router.lifespan_context(app):
            pass
    with pytest.raises(RuntimeError, match="did not start"):  # uvicorn refuses to serve it
        async with serve_in_background(create_app(behind)):
            pass
    assert head_revision()


def test_revisions_are_four_digit_numbers_in_migration_order() -> None:
    """``app.db.compat`` compares revision ids to tell older code from newer: they must be numbered in order."""
    from alembic.script import ScriptDirectory

    from app.db.schema import alembic_config

    chain = list(
        reversed(list(ScriptDirectory.from_config(alembic_config("postgresql://x/y")).walk_revisions()))
    )
    assert [s.revision for s in chain] == [f"{i:04d}" for i in range(1, len(chain) + 1)]
    assert [s.down_revision for s in chain] == [None] + [s.revision for s in chain[:-1]]


async def test_every_migration_from_0012_on_says_which_code_it_accepts(scratch_pg: str) -> None:
    await asyncio.to_thread(upgrade, scratch_pg, "head")
    head = head_revision()
    assert head is not None
    rows = await _compat_rows(scratch_pg)
    assert set(rows) == {f"{i:04d}" for i in range(12, int(head) + 1)}
    assert all(oldest <= revision for revision, oldest in rows.items())
    # Never decreasing: a migration's answer also answers for every migration before it (``app.db.compat``),
    # so the database's own row is the whole check.
    answers = [rows[r] for r in sorted(rows)]
    assert answers == sorted(answers)


async def test_older_code_runs_on_a_newer_schema_only_when_the_schema_accepts_it(scratch_pg: str) -> None:
    await asyncio.to_thread(upgrade, scratch_pg, "0012")
    engine = create_engine(scratch_pg)
    try:
        await check_schema(engine, "0012")  # its own
        await check_schema(engine, "0011")  # 0012 only added a table: the previous release runs on it
        with pytest.raises(SchemaOutOfDate, match="runs code from 0011 on only"):
            await check_schema(engine, "0010")
        await _set_oldest(scratch_pg, "0012", "0012")  # as a migration that drops what 0011 reads would say
        with pytest.raises(SchemaOutOfDate, match="deploy the release that migrated it"):
            await check_schema(engine, "0011")
        with pytest.raises(SchemaOutOfDate, match="contactsync migrate"):
            await check_schema(engine, "0013")  # newer code on an older schema: never
        await asyncio.to_thread(downgrade, scratch_pg, "0011")
        with pytest.raises(SchemaOutOfDate, match="runs code from 0011 on only"):
            await check_schema(engine, "0010")  # no compat table at all: only the exact revision
    finally:
        await engine.dispose()


async def _compat_rows(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return {r["revision"]: r["oldest_code"] for r in await conn.fetch("SELECT * FROM schema_compat")}
    finally:
        await conn.close()


async def _set_oldest(url: str, revision: str, oldest: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute("UPDATE schema_compat SET oldest_code = $2 WHERE revision = $1", revision, oldest)
    finally:
        await conn.close()


async def test_additive_keeps_the_previous_answer_and_breaking_names_itself(scratch_pg: str) -> None:
    """Two later releases, as their migrations would declare themselves: an additive 0013 keeps 0012's
    answer (code from 0011 on), a breaking 0014 accepts only its own code."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    from app.db import compat

    await asyncio.to_thread(upgrade, scratch_pg, "0012")
    engine = create_engine(scratch_pg)

    def later_releases(conn: object) -> None:
        with Operations.context(MigrationContext.configure(conn)):  # type: ignore[arg-type]
            compat.additive("0013", previous="0012")
            compat.breaking("0014")

    try:
        async with engine.begin() as conn:
            await conn.run_sync(later_releases)
        assert (await _compat_rows(scratch_pg)) == {"0012": "0011", "0013": "0011", "0014": "0014"}
        await _set_revision(scratch_pg, "0013")
        await check_schema(engine, "0011")  # two releases behind, through additive migrations only
        await _set_revision(scratch_pg, "0014")
        with pytest.raises(SchemaOutOfDate, match="runs code from 0014 on only"):
            await check_schema(engine, "0013")
    finally:
        await engine.dispose()


async def _set_revision(url: str, revision: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await conn.close()
