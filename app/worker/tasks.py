"""Job functions. Jobs take ids, reload from PostgreSQL and are idempotent: any job may run twice."""

from __future__ import annotations

from typing import Any

import structlog

from app.context import ProcessContext

log = structlog.get_logger(__name__)


def process_context(ctx: dict[str, Any]) -> ProcessContext:
    pc: ProcessContext = ctx["process"]
    return pc


async def ping(ctx: dict[str, Any], value: str = "pong") -> str:
    """Trivial task proving the queue wiring end to end: enqueue it and read the result back."""
    log.info("worker.ping", value=value)
    return value
