"""Typed enqueue helpers. Jobs carry ids only; every input lives in PostgreSQL.

Job ids are unique per trigger, so no enqueue is ever swallowed by an existing job key; the jobs themselves
coalesce (each drains everything pending for its account under a per-account lock).
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from arq.connections import ArqRedis

log = structlog.get_logger(__name__)

# Coalescing window for pushes: changes arriving within it share one importContacts call.
FLUSH_DELAY_SECONDS = 0.4


async def _enqueue(
    queue: ArqRedis, function: str, *args: Any, job_id: str, defer: float | None = None
) -> None:
    try:
        await queue.enqueue_job(function, *args, _job_id=job_id, _defer_by=defer)
    except Exception as exc:
        # Redis is only the wake-up signal: the sweeper re-finds this work in PostgreSQL.
        log.warning("enqueue.failed", function=function, error=repr(exc))


def _uid(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


async def process_events(queue: ArqRedis, account_id: int, source: str = "kommo") -> None:
    await _enqueue(queue, "process_events", account_id, source, job_id=_uid(f"events:{source}:{account_id}"))


async def flush_outbox(queue: ArqRedis, account_id: int, *, delay: float = FLUSH_DELAY_SECONDS) -> None:
    await _enqueue(queue, "flush_outbox", account_id, job_id=_uid(f"flush:{account_id}"), defer=delay)


async def full_sync(queue: ArqRedis, run_id: str, *, delay: float | None = None) -> None:
    await _enqueue(queue, "full_sync", run_id, job_id=_uid(f"sync:{run_id}"), defer=delay)


async def tag_unsubscribes(queue: ArqRedis, account_id: int) -> None:
    await _enqueue(queue, "tag_unsubscribes", account_id, job_id=_uid(f"tag:{account_id}"))
