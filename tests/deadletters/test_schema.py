"""The dead-letter migration creates exactly what the model declares (columns, types, index, foreign key)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.config import Settings
from app.db.base import Base
from app.db.session import create_engine

TABLE = "dead_letter_action"


def _diff(conn: Any) -> list[Any]:
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "include_name": lambda name, kind, parent: kind != "table" or name == TABLE,
        },
    )
    return [d for d in compare_metadata(context, Base.metadata) if TABLE in repr(d)]


async def test_migrated_table_matches_the_model(settings: Settings) -> None:
    assert settings.database_url
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == []
