"""A minimal HTTP/1.1 keep-alive load generator (closed and open loops) for the ingest benchmark: raw sockets,
so the generator costs far less CPU than an HTTP client library would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import pct

# --- load generation: a minimal HTTP/1.1 keep-alive client ------------------------------------------------


class RawConnection:
    """One keep-alive HTTP/1.1 connection; far cheaper per request than httpx, so the load generator is not
    the bottleneck on a 2-core machine."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        """Send a complete request, read the response; returns the status code."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def post_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: amoCRM-WebHook-client/1.0\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return pct(self.latencies, q) * 1000.0


async def closed_loop(
    host: str, port: int, make: Callable[[], bytes], concurrency: int, seconds: float
) -> LoadResult:
    """``concurrency`` connections, each sending its next request as soon as the last is answered."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        conn = RawConnection(host, port)
        try:
            while time.perf_counter() < stop_at:
                raw = make()
                t = time.perf_counter()
                try:
                    status = await conn.request(raw)
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t)
                if status >= 300:
                    errors += 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return LoadResult(len(latencies), errors, time.perf_counter() - started, latencies)


async def open_loop(
    host: str, port: int, make: Callable[[], bytes], rate: float, seconds: float, max_conns: int = 256
) -> LoadResult:
    """Requests scheduled at a fixed ``rate`` whatever the answers do; latency counts from the scheduled send
    time (no coordinated omission). Connections come from a pool that grows up to ``max_conns``."""
    idle: list[RawConnection] = []
    opened = 0
    latencies: list[float] = []
    errors = 0
    slots = asyncio.Semaphore(max_conns)

    async def one(scheduled: float, raw: bytes) -> None:
        nonlocal errors, opened
        async with slots:
            if idle:
                conn = idle.pop()
            else:
                conn = RawConnection(host, port)
                opened += 1
            try:
                status = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError):
                conn.close()
                errors += 1
                return
            latencies.append(time.perf_counter() - scheduled)
            if status >= 300:
                errors += 1
            idle.append(conn)

    n = int(rate * seconds)
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter()
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, make())))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    elapsed = time.perf_counter() - t0
    for conn in idle:
        conn.close()
    return LoadResult(len(latencies), errors, elapsed, latencies)
