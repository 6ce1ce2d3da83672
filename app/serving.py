"""Serving over HTTP with uvicorn: the connection limits uvicorn lacks, and one way to build its config.

uvicorn's httptools protocol has no limit on the size of a request's line and headers (httptools buffers a
header until it ends: five connections sending 100 MB headers took the API from 128 to 696 MB) and no
deadline for them (a client that sends one byte every few seconds, or none at all, holds its connection
forever), nor for bodies. ``BoundedHttpToolsProtocol`` adds them at the protocol level, where they cost
nothing for a request that arrives in one read, and keeps httptools' speed (h11 bounds headers but parses
in Python, on the busiest path of the service). The body size cap is ``app.middleware.BodyGuardMiddleware``.
Apps must be served through ``uvicorn_config`` for these limits to apply.

Running the servers (the program's own, and in-process ones for the demo, tests and benchmarks): ``app.servers``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from app.api.errors import BodyRefused
from app.config import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = 16_384
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    body_min_rate: int = 32_768
    keep_alive_timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            body_min_rate=settings.http_body_min_rate,
            keep_alive_timeout=settings.http_keep_alive_timeout,
        )


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing; uvicorn then calls ``send_400_response``."""


# How long a connection answered before its request fully arrived keeps reading (and discarding) after the
# answer, so the client can read the answer (see ``_LingeringClose``).
LINGER_SECONDS = 2.0


class _LingeringClose:
    """The transport as uvicorn sees it, whose ``close()`` lingers while the client is still sending.

    Closing a socket with unread data in it makes the kernel send a reset, and a reset makes the client's
    kernel drop what it had not read yet: a client still sending a body would never see the 413 or 408
    that explains why. So the write side is closed first (the client reads the answer, then end of stream),
    what still arrives is discarded, and the socket is closed when the client closes or ``LINGER_SECONDS``
    pass (the usual lingering close of HTTP servers).
    """

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closing = False
        self.write = transport.write  # the one method called per response: no __getattr__ on the way

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        transport = self._transport
        if transport.is_closing() or not self._protocol.receiving or not transport.can_write_eof():
            transport.close()
            return
        self._protocol.lingering = True
        transport.write_eof()
        transport.resume_reading()
        self._protocol.loop.call_later(LINGER_SECONDS, transport.close)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks: on each request's head a size cap (431) and a
    deadline (408), on its body a deadline (408), and a lingering close (``_LingeringClose``).

    The head is counted twice: while it is incomplete, by the bytes fed to the parser since it began (so
    what httptools buffers stays bounded; the chunk that starts a head is not counted, which lets a head
    overshoot by at most one read); once complete, exactly. Its deadline runs from the connection's start
    or the request's first read; a connection that sent nothing by then is closed without an answer.

    A body gets ``body_timeout`` seconds from the end of its head, more while it keeps arriving at
    ``body_min_rate`` bytes/s (a slow but steady upload of a large body gets through; a trickle does not).
    When it runs out, the app's next ``receive`` raises ``BodyRefused`` (408), which the app renders, and if
    the app has answered already the connection is closed. Idle keep-alive connections are closed by
    uvicorn's own ``timeout_keep_alive``.

    A timer is armed only when a read leaves a head or body incomplete: a request that arrives in one read,
    as nearly every webhook does, costs none.
    """

    max_header_bytes: ClassVar[int] = 16_384
    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 10.0
    body_min_rate: ClassVar[int] = 32_768

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.receiving = False  # a request has begun and not fully arrived
        self.lingering = False  # answered and closing: what arrives now is discarded
        super().connection_made(_LingeringClose(transport, self))  # type: ignore[arg-type]
        self._heads = 0  # requests begun on this connection
        self._head_bytes = 0
        self._in_head = True  # waiting for, or reading, a request's line and headers
        self._body_bytes = 0
        self._phase_started = self.loop.time()  # when the current head or body began
        self._refusal: tuple[int, str, str] | None = None
        self._timer: asyncio.TimerHandle | None = self.loop.call_at(
            self._phase_started + self.header_timeout, self._head_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        heads = self._heads
        super().data_received(data)
        if not self.receiving or self.transport.is_closing():
            return
        if self._in_head:
            if heads == self._heads:
                self._head_bytes += len(data)
                if self._head_bytes > self.max_header_bytes:
                    self._refuse(*self._too_large())
                    return
            if self._timer is None:
                self._timer = self.loop.call_at(
                    self._phase_started + self.header_timeout, self._head_timed_out
                )
        elif self._timer is None:
            self._arm_body_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.receiving = True
        self._heads += 1
        self._head_bytes = 0
        self._in_head = True
        self._phase_started = self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_timer()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            self._refusal = self._too_large()
            raise _HeadTooLarge
        self._body_bytes = 0
        self._phase_started = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.receiving = False
        self._stop_timer()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(*self._refusal)

    def _too_large(self) -> tuple[int, str, str]:
        return (
            431,
            "headers_too_large",
            f"The request line and headers exceed the limit of {self.max_header_bytes} bytes.",
        )

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._heads == 0:
            self.transport.close()  # not a byte was sent: nobody to answer
            return
        self._refuse(
            408,
            "request_timeout",
            f"The request line and headers did not arrive within {self.header_timeout:g} s.",
        )

    def _arm_body_deadline(self) -> None:
        cycle = self.cycle
        if getattr(cycle, "body_deadline", None) is None:
            # Its ASGI task has not run yet (tasks start after this read), so the app gets this receive.
            cycle.body_deadline = _BodyDeadline(cycle)  # type: ignore[attr-defined]
        allowed = max(self.body_timeout, self._body_bytes / self.body_min_rate)
        self._timer = self.loop.call_at(self._phase_started + allowed, self._body_timed_out)

    def _body_timed_out(self) -> None:
        self._timer = None
        if not self.receiving or self._in_head or self.transport.is_closing():
            return
        allowed = max(self.body_timeout, self._body_bytes / self.body_min_rate)
        if self.loop.time() < self._phase_started + allowed:
            self._arm_body_deadline()  # it kept arriving at the minimum rate: more time
            return
        cycle = self.cycle
        if cycle.response_started:
            self.transport.close()  # answered already (without the body): stop waiting for it
            return
        cycle.body_deadline.expire(allowed)  # type: ignore[attr-defined]

    def _refuse(self, status: int, code: str, detail: str) -> None:
        self._stop_timer()
        log.warning("http.refused", status=status, error=code, client=self.client and self.client[0])
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps({"error": code, "detail": detail}).encode()
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: application/json\r\n",
                        b"x-content-type-options: nosniff\r\n",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n\r\n",
                        body,
                    ]
                )
            )
        # else: an earlier request on this connection is still being answered; closing is all we can do.
        self.transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _BodyDeadline:
    """Installed as a request's ``receive`` once its body is late to arrive: after ``expire`` the app's
    next ``receive`` raises 408 instead of waiting for the rest (the app renders it like any error)."""

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle
        self._receive = cycle.receive
        self._allowed: float | None = None
        cycle.receive = self  # type: ignore[method-assign]

    def expire(self, allowed: float) -> None:
        self._allowed = allowed
        self._cycle.message_event.set()  # wakes a receive that is waiting

    async def __call__(self) -> Any:
        message = await self._receive()
        if self._allowed is not None and message["type"] == "http.request" and message["more_body"]:
            raise BodyRefused(
                408, "request_timeout", f"The request body did not arrive within {self._allowed:g} s."
            )
        return message


def bounded_protocol(limits: HttpLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class with ``limits`` (uvicorn instantiates the class itself, once per connection)."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {
            "max_header_bytes": limits.max_header_bytes,
            "header_timeout": limits.header_timeout,
            "body_timeout": limits.body_timeout,
            "body_min_rate": limits.body_min_rate,
        },
    )


def uvicorn_config(
    app: ASGIApp, *, host: str, port: int, limits: HttpLimits, **options: Any
) -> uvicorn.Config:
    """How every server of ours is configured: the bounded protocol, no access log (we log ourselves)."""
    options.setdefault("access_log", False)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=bounded_protocol(limits),
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
        **options,
    )
