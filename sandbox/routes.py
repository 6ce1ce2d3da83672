"""The sandboxes' routes, included once per process and shared by every sandbox app built in it: FastAPI builds
an inclusion's routes (dependants, validators) on its first request, once per inclusion, and a test run builds
a sandbox per test."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import BaseRoute

# Keyed by the routers' identities: they are module-level objects, alive for the whole process.
_built: dict[tuple[int, ...], tuple[BaseRoute, ...]] = {}


def shared_routes(*routers: APIRouter) -> list[BaseRoute]:
    """``routers`` included, in this order, for a new app's ``routes=``."""
    key = tuple(id(router) for router in routers)
    built = _built.get(key)
    if built is None:
        holder = APIRouter()
        for router in routers:
            holder.include_router(router)
        built = _built[key] = tuple(holder.routes)
    return list(built)
