"""The FastAPI application: ``create_app()`` and its lifespan."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from app.accounts.webhook_auth import WebhookAuth
from app.api.errors import install_error_handlers
from app.api.router import api_router
from app.api.webhooks import KommoWebhookFastPath
from app.config import Settings, get_settings
from app.console.routes import router as console_router
from app.context import ProcessContext, build_context
from app.db.schema import check_schema_current
from app.logging import configure_logging
from app.metrics import MetricsMiddleware
from app.middleware import BodyGuardMiddleware, RequestIdMiddleware, SecurityHeadersMiddleware
from app.queue.enqueue import WakeUps
from app.sync.ingest import InboxWriter, WebhookIntake

log = structlog.get_logger(__name__)


@functools.cache
def _routes() -> tuple[BaseRoute, ...]:
    """The API's and the console's routes, included once per process and shared by every app built in it.

    FastAPI builds an included router's routes (dependants, parameter validators) on the first request that
    reaches them, once per inclusion: 0.13 s of CPU, on the first request of every app, were each app to
    include the routers itself (the tests build hundreds). Nothing in an inclusion belongs to one app: no app
    of ours sets dependency overrides, and handlers reach the process context through ``request.app``."""
    holder = APIRouter()
    holder.include_router(api_router)
    holder.include_router(console_router)  # the operator console's pages, /console
    return tuple(holder.routes)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. The schema must be at head (``contactsync migrate``; ``serve --embedded`` migrates its
    own database before it starts)."""
    settings = settings or get_settings()
    configure_logging(fmt=settings.effective_log_format, level=settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await build_context(settings, pre_ping=False)
        try:
            await check_schema_current(ctx.db.engine)
        except Exception:
            await ctx.close()
            raise
        wakeups = WakeUps(ctx.queue)
        app.state.ctx = ctx
        writer = InboxWriter(ctx, deadline=settings.webhook_deadline)
        app.state.intake = WebhookIntake(
            pc=ctx,
            auth=WebhookAuth(),
            wakeups=wakeups,
            writer=writer,
            deadline=settings.webhook_deadline,
            unisender_deadline=settings.unisender_hook_deadline,
        )
        log.info("api.started", env=settings.env.value)
        try:
            yield
        finally:
            await writer.close()
            await wakeups.close()
            await ctx.close()
            log.info("api.stopped")

    docs = settings.serve_docs
    app = FastAPI(
        # The API documentation tells an attacker every operation and parameter: off in production unless
        # CONTACTSYNC_DOCS_ENABLED says otherwise.
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        title="contactsync",
        version="0.1.0",
        summary="Mirrors Kommo contacts into Unisender and brings unsubscribes back.",
        lifespan=lifespan,
        # We export Prometheus metrics and structured logs ourselves; FastAPI's native OpenTelemetry hooks
        # would otherwise look up the global providers (environment reads) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        routes=list(_routes()),
    )
    install_error_handlers(app)
    # The first call below is the innermost at run time: Kommo webhook fast path, body cap, metrics,
    # security headers, ids. (Limits on request heads and deadlines are the server's: app.serving.)
    app.add_middleware(KommoWebhookFastPath)
    app.add_middleware(BodyGuardMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(
        SecurityHeadersMiddleware,
        docs_paths=frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"} if docs else ()),
    )
    app.add_middleware(RequestIdMiddleware)
    return app


def app_context(app: FastAPI) -> ProcessContext:
    ctx: ProcessContext = app.state.ctx
    return ctx
