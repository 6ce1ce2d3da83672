"""Run an ASGI app with uvicorn inside the current event loop, on a loopback port.

Used by the demo (sandboxes beside the service in one process), by tests and by benchmarks: everything talks
real HTTP over loopback, never through an in-memory transport.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import ASGIApp


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve_in_background(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> AsyncIterator[str]:
    """Start ``app`` on ``host:port`` (0 = a free port) and yield its base URL; stop it on exit."""
    port = port or free_port(host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on", loop="none"
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        try:
            await server.serve()
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
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
