"""Prometheus metrics. Low-cardinality labels only: never contact ids or emails."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "contactsync_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "contactsync_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOKS = Counter("contactsync_webhook_requests_total", "Inbound webhooks", ["provider", "outcome"])
# Per event of a Unisender hook delivery. event: email_status|subscribe|unsubscribe|campaign_status|unknown;
# outcome: accepted (stored for processing), unrecognised (stored, never processed), duplicate (stored before).
UNISENDER_HOOK_EVENTS = Counter(
    "contactsync_unisender_hook_events_total",
    "Events in Unisender hook deliveries",
    ["event", "outcome"],
)
JOBS = Counter("contactsync_jobs_total", "Worker jobs run", ["function", "result"])
PROVIDER_REQUESTS = Counter(
    "contactsync_provider_requests_total", "Calls to third-party APIs", ["provider", "method", "status"]
)
PROVIDER_THROTTLED = Counter(
    "contactsync_provider_throttled_total", "Provider rate-limit answers", ["provider"]
)
EVENTS_PENDING = Gauge("contactsync_events_pending", "Inbox events not yet processed (last sweep)")
OUTBOX_PENDING = Gauge("contactsync_outbox_pending", "Outbox rows waiting to be pushed (last sweep)")
# kind: event|outbox|crm_write|signup. Rows that failed for good and wait for an operator (replay or discard).
DEAD_LETTERS = Gauge(
    "contactsync_dead_letters", "Dead letters waiting for an operator (last sweep)", ["kind"]
)
EVENT_LAG = Histogram(
    "contactsync_event_lag_seconds",
    "Webhook receipt to email-platform call",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
TOKEN_REFRESH = Counter("contactsync_token_refresh_total", "Kommo token refreshes", ["result"])


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


# The status label of a request whose client went away before it was answered (nginx's convention): not a
# failure of ours, so never counted as a 500.
CLIENT_CLOSED = "499"


class MetricsMiddleware:
    """Count requests and time them, labelled by the route template (not the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False
        client_closed = False

        async def receive_wrapper() -> Message:
            nonlocal client_closed
            message = await receive()
            if message["type"] == "http.disconnect" and not started:
                client_closed = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            # Whatever the app did after the client left (an error answer sent into the void, or none) is
            # not what the client saw.
            label = CLIENT_CLOSED if client_closed else str(status)
            HTTP_REQUESTS.labels(method, template, label).inc()
            HTTP_DURATION.labels(method, template).observe(time.perf_counter() - start)


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> Callable[[], None]:
    """Serve this process's metrics on ``host:port`` from a thread; returns the function that stops it.

    A worker has no HTTP app, yet its jobs, lag and provider calls are the metrics that matter most; without
    this, only an embedded (API + worker) process showed them.
    """
    server, thread = start_http_server(port, addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
