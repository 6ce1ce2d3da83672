"""Fault tests run against a private redis-server (FLUSHALL and restarts must not touch other runs' queues,
and no other run's worker may steal these tests' jobs) and the shared PostgreSQL test database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.config import Settings
from tests.faults.support import PrivateRedis, start_private_redis


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = start_private_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
async def clean_redis(private_redis: PrivateRedis) -> AsyncIterator[None]:
    """Overrides the shared fixture: the private server, restarted if a test left it down, emptied."""
    if private_redis.proc is None or private_redis.proc.poll() is not None:
        private_redis.start()
    client = aioredis.from_url(private_redis.url)
    await client.flushall()
    yield
    await client.aclose()


@pytest.fixture
def settings(settings: Settings, private_redis: PrivateRedis, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"redis_url": private_redis.url})


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under ``--long``: fuller versions (more contacts, more kills)."""
    return bool(request.config.getoption("--long"))
