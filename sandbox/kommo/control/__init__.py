"""Control API under ``/_sandbox/...`` (JSON in, JSON out; no auth): setup, data, operations."""

from __future__ import annotations

from fastapi import APIRouter

from . import data, ops, setup

__all__ = ["router"]

router = APIRouter()
for part in (setup, data, ops):
    router.include_router(part.router)
