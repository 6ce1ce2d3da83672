"""The arq connection, and (in ``enqueue``) the typed helpers that send jobs.

Redis is only a wake-up signal here: every job's input lives in PostgreSQL, so losing Redis loses nothing
(the sweeper re-enqueues pending work from the tables).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings

QUEUE_NAME = "contactsync:queue"
# Bulk jobs' ids start ``bulk:<account id>:``; the worker caps their number per account and per worker by it,
# and they wait in a queue of their own (``bulk_queue``), so that however many of them wait, a worker's reads
# of the live queue find live jobs first.
BULK_PREFIX = "bulk:"


def bulk_queue(queue_name: str) -> str:
    """The bulk jobs' queue beside the live queue ``queue_name``."""
    return f"{queue_name}:bulk"


BULK_QUEUE_NAME = bulk_queue(QUEUE_NAME)
# arq's health checks, one key per queue's workers: set every 15 s by the workers, read by ``contactsync status``
# (gone 1 s after a missed beat).
HEALTH_KEY = "contactsync:worker:health"
BULK_HEALTH_KEY = "contactsync:worker:health:bulk"


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 1
    settings.conn_retry_delay = 0
    return settings


async def create_queue(redis_url: str) -> ArqRedis:
    # Connect lazily: the API must start (and keep accepting webhooks into PostgreSQL) while Redis is down;
    # arq's create_pool would retry and then fail start-up instead.
    pool: aioredis.ConnectionPool = aioredis.ConnectionPool.from_url(
        redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
    )
    return ArqRedis(connection_pool=pool, default_queue_name=QUEUE_NAME)


async def ping(redis: Any) -> bool:
    return bool(await redis.ping())
