"""``serve_in_background`` stops quickly (its own graceful shutdown) but still gracefully: a request in flight
gets its whole answer, the app's shutdown runs, and the port then refuses connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from app.context import tls_context
from app.servers import serve_in_background


def _slow_app(events: list[str], release: asyncio.Event) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("started")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        events.append("request")
        await release.wait()
        events.append("answered")
        return {"ok": "yes"}

    return app


async def test_a_request_in_flight_is_answered_before_the_server_stops() -> None:
    events: list[str] = []
    release = asyncio.Event()
    async with httpx.AsyncClient(verify=tls_context(), timeout=10) as client:
        async with serve_in_background(_slow_app(events, release)) as url:
            in_flight = asyncio.create_task(client.get(f"{url}/slow"))
            for _ in range(500):  # bounded: until the handler runs
                if "request" in events:
                    break
                await asyncio.sleep(0.01)
            assert events == ["started", "request"]
            # Leave the block (stop the server) while the handler still waits; release it a moment later.
            asyncio.get_running_loop().call_later(0.3, release.set)
        response = await in_flight
        assert response.status_code == 200, response.text
        assert response.json() == {"ok": "yes"}
        assert events == ["started", "request", "answered", "shutdown"]
        refused = False
        try:
            await client.get(f"{url}/slow")
        except httpx.ConnectError:
            refused = True
        assert refused, "the port still accepted a connection after the server stopped"


async def test_an_idle_keep_alive_connection_does_not_hold_the_stop() -> None:
    events: list[str] = []
    release = asyncio.Event()
    release.set()
    async with httpx.AsyncClient(verify=tls_context(), timeout=10) as client:
        async with serve_in_background(_slow_app(events, release)) as url:
            assert (
                await client.get(f"{url}/slow")
            ).status_code == 200  # leaves an idle keep-alive connection
        # The server closed that connection at the stop: the next request on this client finds no server.
        assert events[-1] == "shutdown"
        refused = False
        try:
            await client.get(f"{url}/slow")
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            refused = True
        assert refused
