"""Benchmark stacks of several processes: the providers' real limits for the sandboxes (and the service's
budgets equal), a round-robin TCP proxy in front of several API processes, and several worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from bench.common import ServiceConfig, worker_process

# --- several API processes, real provider limits ------------------------------------------------------


def real_limits(scale: float = 1.0) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The providers' real limits (×``scale``) for the sandboxes, and the service's budgets set equal to them,
    as ``bench.fullsync`` configures them: (KommoSandboxConfig kwargs, UnisenderSandboxConfig kwargs, env).
    Kommo 7 calls/s per integration and 250 contacts per page; Unisender 1,200 calls/min per key and 500
    rows per import."""
    kommo_rps, uni_per_min = 7 * scale, 1200 * scale
    kommo = {"rate_limit_rps": int(kommo_rps), "max_limit": 250}
    unisender = {"calls_per_minute": int(uni_per_min), "max_import_rows": 500}
    env = {
        "CONTACTSYNC_KOMMO_RATE_PER_SECOND": str(kommo_rps),
        "CONTACTSYNC_UNISENDER_CALLS_PER_MINUTE": str(uni_per_min),
    }
    return kommo, unisender, env


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then half-close the other side (an HTTP client may still be reading)."""
    # RuntimeError: uvloop's answer to a write on a transport the other direction has already closed.
    with contextlib.suppress(OSError, ConnectionError, RuntimeError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if not writer.is_closing() and writer.can_write_eof():
            writer.write_eof()


@asynccontextmanager
async def round_robin_proxy(ports: Sequence[int]) -> AsyncIterator[int]:
    """A loopback TCP proxy handing each new connection to the next of ``ports`` in turn, as a load balancer
    in front of several API processes does; yields its own port. Connection-level, so a client that keeps
    its connection (httpx) stays on one process, while Kommo's webhooks (``Connection: close``) alternate."""
    turn = 0
    open_conns: set[asyncio.StreamWriter] = set()

    async def handle(creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        nonlocal turn
        port = ports[turn % len(ports)]
        turn += 1
        open_conns.add(cwriter)
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            open_conns.discard(cwriter)
            cwriter.close()
            return
        open_conns.add(uwriter)
        try:
            await asyncio.gather(_pipe(creader, uwriter), _pipe(ureader, cwriter))
        finally:
            for w in (cwriter, uwriter):
                open_conns.discard(w)
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for w in list(open_conns):  # wait_closed waits for open connections on newer Pythons
            w.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5)


@asynccontextmanager
async def worker_processes(
    cfg: ServiceConfig, count: int, roles: Sequence[str] | None = None
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """``count`` ``contactsync worker`` processes on the same settings (unpinned), each of its ``roles`` entry
    (none: the default, all jobs); all stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        kinds: list[str | None] = list(roles) if roles else [None] * count
        procs = [await stack.enter_async_context(worker_process(cfg, role=kind)) for kind in kinds]
        yield procs
