"""Migrations go down to nothing and up again, and the service refuses a schema behind head."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy import inspect

from app.config import Settings
from app.db.base import Base
from app.db.schema import SchemaOutOfDate, check_schema_current, downgrade, head_revision, upgrade
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
    return names - {"alembic_version"}


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
    await check_schema_current(engine, url)  # at head: no error
    await engine.dispose()


async def test_app_refuses_to_start_when_schema_is_behind(scratch_pg: str, settings: Settings) -> None:
    behind = settings.model_copy(update={"database_url": scratch_pg})  # never migrated
    engine = create_engine(scratch_pg)
    with pytest.raises(SchemaOutOfDate, match="contactsync migrate"):
        await check_schema_current(engine, scratch_pg)
    await engine.dispose()
    app = create_app(behind)
    with pytest.raises(SchemaOutOfDate):
        async with app.router.lifespan_context(app):
            pass
    with pytest.raises(RuntimeError, match="did not start"):  # uvicorn refuses to serve it
        async with serve_in_background(create_app(behind)):
            pass
    assert head_revision(scratch_pg)
