"""Assembles the routers."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import accounts, health, integration

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(integration.router)
api_router.include_router(accounts.router)
