"""Probes and metrics: /healthz (process up), /readyz (database migrated + Redis reachable), /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import metrics
from app.api.deps import ContextDep
from app.api.routing import AppRoute
from app.db.schema import check_schema_current

router = APIRouter(tags=["health"], route_class=AppRoute)

PROBE_TIMEOUT = 1.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database reachable and migrated, Redis reachable")
async def readyz(ctx: ContextDep) -> JSONResponse:
    checks: dict[str, Any] = {}

    async def database() -> None:
        async with ctx.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        await check_schema_current(ctx.db.engine)

    async def redis() -> None:
        await ctx.queue.ping()

    for name, probe in (("database", database), ("redis", redis)):
        try:
            await asyncio.wait_for(probe(), timeout=PROBE_TIMEOUT)
            checks[name] = {"ok": True}
        except TimeoutError:
            checks[name] = {"ok": False, "reason": f"no answer within {PROBE_TIMEOUT:.0f} s"}
        except Exception as exc:
            checks[name] = {"ok": False, "reason": _reason(exc)}
    ready = all(c["ok"] for c in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": checks}
    if not ready:
        failing = ", ".join(n for n, c in checks.items() if not c["ok"])
        body.update(error="not_ready", detail=f"Not ready: {failing} unavailable.")
    return JSONResponse(body, status_code=200 if ready else 503)


def _reason(exc: Exception) -> str:
    # Connection errors may embed a DSN; keep only the class and a short, redacted message.
    from app.logging import redact_text

    message = redact_text(str(exc).splitlines()[0] if str(exc) else "")
    return f"{type(exc).__name__}: {message}"[:200]


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
