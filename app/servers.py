"""Running uvicorn servers: the program's own (``StoppableServer``: ``serve``, ``serve --embedded``) and
in-process ones (``serve_in_background``: the demo runs the sandboxes beside the service in one process;
tests and benchmarks talk real HTTP, never an in-memory transport). Every one is configured by
``app.serving.uvicorn_config``, so the connection limits apply to all."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from starlette.types import ASGIApp

from app.serving import HttpLimits, uvicorn_config


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), for a server to listen on.

    Made with the protocol named (``IPPROTO_TCP``), as ``getaddrinfo`` names it for servers asyncio binds
    itself: asyncio sets TCP_NODELAY on the connections it accepts only for sockets of that protocol. With
    protocol 0 every response was written under Nagle's algorithm, and each waited out the client's delayed
    acknowledgement: 44 ms per request on loopback instead of about 1 ms."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, port))
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _InProcessServer(uvicorn.Server):
    """A server beside other work in this process. uvicorn's own signal handlers would stop it at Ctrl-C
    while that work still uses it (the demo's scenario then failed with connection errors); here the
    signal is the program's: asyncio cancels it, and leaving ``serve_in_background`` stops the server.

    It also stops in milliseconds: uvicorn notices ``should_exit`` at its next 0.1 s tick, always sleeps
    0.1 s after asking connections to close and polls them every 0.1 s, which cost a test run (hundreds of
    servers started and stopped) minutes. ``stop()`` wakes the main loop at once, and the graceful
    shutdown below polls every 5 ms within the same bound (``timeout_graceful_shutdown``, else 10 s)."""

    _STOP_POLL = 0.005

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stopping = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()

    async def main_loop(self) -> None:
        ticks = 0
        while not await self.on_tick(ticks):  # on_tick keeps the Date header fresh and reads should_exit
            ticks = (ticks + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 10.0)
        state = self.server_state
        # uvicorn's connection and task sets offer nothing to wait on: poll them, bounded.
        while (state.connections or state.tasks) and loop.time() < deadline and not self.force_exit:  # noqa: ASYNC110
            await asyncio.sleep(self._STOP_POLL)
        for task in list(state.tasks):
            task.cancel(msg="the server stopped before this request ended")
        for server in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
        if not self.force_exit:
            await self.lifespan.shutdown()


class StoppableServer(uvicorn.Server):
    """A server that is the program: SIGINT, SIGTERM and SIGHUP stop it gracefully (a second SIGINT at
    once), and ``serve()`` then returns, so what the program holds (``serve --embedded``'s worker and
    database servers) is released in order. uvicorn's own handling raises the signal again after the
    shutdown, which ends the process before that."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        for sig in signals:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)


@asynccontextmanager
async def serve_in_background(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    limits: HttpLimits | None = None,
    listening: socket.socket | None = None,
) -> AsyncIterator[str]:
    """Start ``app`` on ``host:port`` (0 = a free port) and yield its base URL; stop it on exit.

    With port 0 the listening socket is bound here and handed to the server: a port only looked up free and
    bound later could be taken by another process in between (parallel test runs did, "address already in
    use"). A caller that must know the port before it builds the app (its own public URL) binds the socket
    itself (``listening_socket``) and passes it as ``listening``."""
    sockets: list[socket.socket] | None = None
    if listening is not None:
        host, port = listening.getsockname()[:2]
        sockets = [listening]
    elif not port:
        listening = listening_socket(host)
        port = int(listening.getsockname()[1])
        sockets = [listening]
    config = uvicorn_config(
        app,
        host=host,
        port=port,
        limits=limits or HttpLimits(),
        log_level=log_level,
        lifespan="on",
        loop="none",
    )
    server = _InProcessServer(config)

    async def serve() -> None:
        try:
            await server.serve(sockets=sockets)
        except SystemExit as exc:  # uvicorn exits the process when the app's start-up fails
            raise RuntimeError(f"server on {host}:{port} did not start (exit {exc.code})") from None

    task = asyncio.create_task(serve())
    try:
        for _ in range(500):  # bounded: 5 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            if task.done():
                task.result()  # re-raise the start-up failure
            raise RuntimeError(f"server on {host}:{port} did not start within 5 s")
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
        for listening in sockets or []:
            listening.close()  # the server closes it on a normal stop; not when its start-up failed
