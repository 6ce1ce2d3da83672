"""The arq connection: real Redis in production, an in-process stand-in in embedded mode.

Redis is only a wake-up signal here: every job's input lives in PostgreSQL, so losing Redis loses nothing
(the sweeper re-enqueues pending work from the tables).
"""

from __future__ import annotations

from typing import Any

import fakeredis
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings

QUEUE_NAME = "contactsync:queue"

_embedded_server: fakeredis.FakeServer | None = None


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 1
    settings.conn_retry_delay = 0
    return settings


def embedded_server() -> fakeredis.FakeServer:
    """The process-wide in-memory Redis used by embedded mode (API and worker share it)."""
    global _embedded_server
    if _embedded_server is None:
        _embedded_server = fakeredis.FakeServer()
    return _embedded_server


async def create_queue(redis_url: str | None) -> ArqRedis:
    if redis_url:
        # Connect lazily: the API must start (and keep accepting webhooks into PostgreSQL) while Redis is
        # down; arq's create_pool would retry and then fail start-up instead.
        real_pool: aioredis.ConnectionPool = aioredis.ConnectionPool.from_url(
            redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
        )
        return ArqRedis(connection_pool=real_pool, default_queue_name=QUEUE_NAME)
    pool: aioredis.ConnectionPool = aioredis.ConnectionPool(
        connection_class=fakeredis.FakeAsyncRedisConnection,
        server=embedded_server(),
    )
    return ArqRedis(connection_pool=pool, default_queue_name=QUEUE_NAME)


async def ping(redis: Any) -> bool:
    return bool(await redis.ping())
