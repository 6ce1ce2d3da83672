"""In-process servers answer without Nagle's delay: the connections they accept have TCP_NODELAY."""

from __future__ import annotations

import asyncio
import socket

from app.servers import listening_socket


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
