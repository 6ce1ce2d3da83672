"""In-process servers answer without Nagle's delay: the connections they accept have TCP_NODELAY."""

from __future__ import annotations

import asyncio
import socket

from fastapi import FastAPI, Request

from app.context import build_http_client
from app.servers import listening_socket, serve_in_background
from app.serving import HttpLimits


async def test_connections_accepted_on_our_listening_socket_have_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket names its protocol;
    without it every response waited out the client's delayed acknowledgement (44 ms each on loopback)."""
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Record(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    listening = listening_socket()
    server = await asyncio.get_running_loop().create_server(Record, sock=listening)
    try:
        host, port = listening.getsockname()
        _, writer = await asyncio.open_connection(host, port)
        assert await asyncio.wait_for(seen, timeout=5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_provider_clients_drop_idle_connections_before_a_5_s_keep_alive_closes_them() -> None:
    """A pooled connection idle for almost the server's keep-alive is not reused: reused, it could be closed
    by the server as the request leaves (a ReadError, seen as a lost campaign lookup in the activity e2e test).
    One request, then another after 4.5 s: between the clients' expiry (4 s) and the servers' 5 s."""
    app = FastAPI()

    @app.get("/port")
    async def port(request: Request) -> dict[str, int]:
        assert request.client is not None
        return {"port": request.client.port}

    assert HttpLimits().keep_alive_timeout == 5.0
    async with serve_in_background(app) as url, build_http_client(timeout=5.0) as http:
        first = (await http.get(f"{url}/port")).json()["port"]
        again = (await http.get(f"{url}/port")).json()["port"]
        assert again == first  # kept alive while fresh
        await asyncio.sleep(4.5)
        later = (await http.get(f"{url}/port")).json()["port"]
        assert later != first  # a new connection, not one the server is about to close
