"""Fixtures of the connector tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL


@pytest.fixture
async def clients() -> AsyncIterator[list[aioredis.Redis]]:
    """Four Redis clients, each with its own connection pool, as four processes would have (shared budgets)."""
    made = [aioredis.Redis.from_url(REDIS_URL, socket_timeout=1) for _ in range(4)]
    yield made
    for client in made:
        await client.aclose()
