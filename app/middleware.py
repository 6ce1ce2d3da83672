"""ASGI middlewares around every request: request id, request body cap, security headers.

Request id: taken from ``X-Request-ID`` when sane, else generated; bound to logs and echoed back.
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import BodyRefused, render_http_exception

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SAFE_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            structlog.contextvars.clear_contextvars()


class BodyGuardMiddleware:
    """Request bodies: at most ``max_bytes`` (413), by Content-Length or while streaming (a chunked body has
    none), raised from inside ``receive`` as ``BodyRefused``, which the app's handlers render; if the app does
    not, this middleware answers. (Their deadline is the connection's: ``app.serving``.)

    An answer sent before the body was read (401 on a bad webhook token, 413, 408) carries
    ``Connection: close``: the unread rest of the body must not be parsed as the next request, and a client
    that keeps sending must not keep the connection.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._reject(send, self._too_large())
                    return
            elif name == b"transfer-encoding":
                chunked = True
        received = 0
        body_done = not chunked and not declared  # nothing to read
        answered = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                if not message.get("more_body", False):
                    body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                if not body_done:
                    message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except BodyRefused as exc:
            if answered:
                raise
            await self._reject(send, exc)

    def _too_large(self) -> BodyRefused:
        return BodyRefused(
            413, "payload_too_large", f"Request body exceeds the limit of {self.max_bytes} bytes."
        )

    @staticmethod
    async def _reject(send: Send, exc: BodyRefused) -> None:
        response = render_http_exception(exc)
        headers = [*response.raw_headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


# Pages a browser renders (the OAuth callback's) load nothing and may not be framed; the API documentation
# pages load their scripts and styles from the CDN FastAPI points them at.
_PAGE_CSP = (
    b"default-src 'none'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; "
    b"form-action 'self'"
)
_DOCS_CSP = (
    b"default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    b"font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    b"https://cdn.jsdelivr.net; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; "
    b"base-uri 'none'; form-action 'none'"
)
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_PAGE_HEADERS = [(b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]


class SecurityHeadersMiddleware:
    """``nosniff`` on every answer; on HTML pages a content security policy, no framing, no referrer."""

    def __init__(self, app: ASGIApp, *, docs_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.docs_paths = docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), _NOSNIFF]
                if any(n == b"content-type" and v.startswith(b"text/html") for n, v in headers):
                    # A page that states its own policy keeps it (the console's allows its own script).
                    if not any(n == b"content-security-policy" for n, _ in headers):
                        csp = _DOCS_CSP if scope.get("path") in self.docs_paths else _PAGE_CSP
                        headers.append((b"content-security-policy", csp))
                    headers += _PAGE_HEADERS
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)
