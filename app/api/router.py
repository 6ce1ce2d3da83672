"""Assembles the routers."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import (
    accounts,
    campaigns,
    contacts,
    dead_letters,
    health,
    integration,
    mapping,
    sync,
    webhooks,
    widget,
)
from app.api.errors import ERROR_RESPONSES

api_router = APIRouter(responses=ERROR_RESPONSES)
# Webhooks first: routes are matched in order, and they are by far the most frequent requests.
api_router.include_router(webhooks.router)
api_router.include_router(health.router)
api_router.include_router(integration.router)
api_router.include_router(widget.router)
api_router.include_router(mapping.router)
api_router.include_router(accounts.router)
api_router.include_router(campaigns.router)
api_router.include_router(sync.router)
api_router.include_router(contacts.router)
api_router.include_router(dead_letters.router)
