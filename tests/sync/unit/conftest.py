"""Fast tests of the mirror's rules: each test gets a session on the real test database inside a transaction
that is rolled back at the end, so nothing is committed, no table needs truncating and a test takes
milliseconds. The code under test may commit or roll back "its" transaction: those become savepoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.session import create_engine
from tests.support.db import rolled_back_session


@pytest.fixture(scope="session")
async def unit_engine(pg_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_database, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(unit_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with rolled_back_session(unit_engine) as db:
        yield db
