"""Transport limits against slow, huge and hostile requests, over real sockets: bounded heads (431) and
deadlines (408), bodies capped while streaming (413) and cut when they trickle (408), the webhook token
checked before the body is read, 401 before any body parsing, duplicate JSON keys refused, client
disconnects counted apart from errors, the API documentation off in production, security headers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Environment, Settings
from app.context import tls_context
from app.main import create_app
from app.servers import free_port, serve_in_background
from app.serving import HttpLimits
from tests.conftest import raw_sql

pytestmark = pytest.mark.usefixtures("clean_db", "clean_redis")

CONTACTSYNC = str(Path(sys.executable).parent / "contactsync")


@dataclass
class Served:
    client: httpx.AsyncClient
    host: str
    port: int
    admin: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def serve(
    settings: Settings, limits: HttpLimits | None = None, **changes: Any
) -> AsyncIterator[Served]:
    changed = settings.model_copy(update=changes)
    app = create_app(changed)
    async with (
        serve_in_background(app, limits=limits or HttpLimits.from_settings(changed)) as url,
        httpx.AsyncClient(verify=tls_context(), base_url=url, timeout=10) as client,
    ):
        host, port = url.removeprefix("http://").split(":")
        admin = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
        yield Served(client, host, int(port), admin)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, *, within: float) -> RawResponse:
    """One HTTP/1.1 response with a Content-Length, read from a raw connection."""
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(status, headers, body)


async def closed_by_server(reader: asyncio.StreamReader, *, within: float) -> bool:
    """True when the server ends the connection within ``within`` seconds (end of stream or reset)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def open_raw(s: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(s.host, s.port)


def request_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def trickle_until_answered(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, piece: bytes, *, every: float, within: float
) -> tuple[RawResponse, float]:
    """Send ``piece`` every ``every`` seconds until the server answers; the answer and when it came."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            response = await read_response(reader, within=every)
        except TimeoutError:
            writer.write(piece)
            await writer.drain()
            continue
        return response, time.monotonic() - start
    raise AssertionError(f"no answer within {within} s while the client trickled")


async def new_integration(s: Served) -> tuple[int, str]:
    """An integration (no OAuth needed for its webhooks); its account id and webhook token."""
    body = {
        "account_id": 32720107,
        "subdomain": "acme",
        "client_id": "client-transport",
        "client_secret": "secret-transport-0123456789",
        "redirect_uri": "https://contactsync.example/auth/callback",
    }
    r = await s.client.post("/integration", json=body, headers=s.admin)
    assert r.status_code == 201, r.text
    return 32720107, r.json()["webhook_url"].split("token=", 1)[1]


# --- request heads: size and deadline -----------------------------------------------------------------------


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def _huge_header(port: int, total: int) -> tuple[int | None, float]:
    """Send a request whose one header never ends (up to ``total`` bytes) until the server answers or
    closes; the status it answered (None if it only closed) and after how many seconds."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer: asyncio.Task[bytes] = asyncio.create_task(reader.read(4096))
    sent = 0
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ")
        chunk = b"a" * 65536
        while sent < total and not answer.done():
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
            await asyncio.sleep(0)  # drain() need not yield: let the answer be read
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(asyncio.shield(answer), 5)
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()
    if not answer.done() or answer.cancelled():
        answer.cancel()
        raise AssertionError(f"the server neither answered nor closed after {sent} bytes of one header")
    after = time.monotonic() - started
    try:
        data = answer.result()
    except ConnectionError:
        data = b""
    status = int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, after


def _start_serve(settings: Settings, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``contactsync serve`` against the test database, in its own process (so its memory is its own)."""
    assert settings.database_url
    assert settings.redis_url
    assert settings.secret_keys
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    env.update(
        CONTACTSYNC_ENV="test",
        CONTACTSYNC_DATABASE_URL=settings.database_url,
        CONTACTSYNC_REDIS_URL=settings.redis_url,
        CONTACTSYNC_SECRET_KEYS=settings.secret_keys.get_secret_value(),
        CONTACTSYNC_ADMIN_TOKEN=settings.admin_token.get_secret_value(),
        CONTACTSYNC_LOG_FORMAT="json",
    )
    with (workdir / "serve.log").open("wb") as log:
        return subprocess.Popen(
            [CONTACTSYNC, "serve", "--port", str(port)], env=env, cwd=workdir, stdout=log, stderr=log
        )


@pytest.mark.slow
async def test_huge_headers_are_refused_early_and_memory_stays_bounded(
    settings: Settings, tmp_path: Path
) -> None:
    """Five connections each sending a 16 MB header: each is refused (431, connection closed) at once, and
    the server's peak RSS (VmHWM, from /proc) grows by less than 24 MB. Without a limit httptools buffers
    every header whole (the peak grew by hundreds of MB) and never answers."""
    port = free_port()
    proc = _start_serve(settings, port, tmp_path)
    try:
        async with httpx.AsyncClient(
            verify=tls_context(), base_url=f"http://127.0.0.1:{port}", timeout=2
        ) as client:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "contactsync serve did not answer within 30 s"
                await asyncio.sleep(0.1)
            before = _memory_kb(proc.pid)
            results = await asyncio.gather(*(_huge_header(port, 16 * 2**20) for _ in range(5)))
            after = _memory_kb(proc.pid)
            assert (await client.get("/healthz")).status_code == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    grown_mb = (after["VmHWM"] - before["VmHWM"]) / 1024
    for status, after in results:
        assert status in (431, None), results
        assert after < 3.0, f"refused only after {after:.1f} s: {results}"
    assert any(status == 431 for status, _ in results), results
    assert grown_mb < 24, f"peak RSS grew by {grown_mb:.0f} MB (before {before}, after {after})"


async def test_a_complete_head_over_the_limit_is_refused_with_431(settings: Settings) -> None:
    async with serve(settings, HttpLimits(max_header_bytes=2048)) as s:
        for size, status in [(1500, 200), (2500, 431)]:
            reader, writer = await open_raw(s)
            writer.write(request_head("GET", "/healthz", {"X-Pad": "p" * size}))  # one read, head complete
            response = await read_response(reader, within=5)
            assert response.status == status, (size, response)
            if status == 431:
                assert response.json()["error"] == "headers_too_large"
                assert await closed_by_server(reader, within=4)
            writer.close()


async def test_slow_or_silent_request_heads_are_cut(settings: Settings) -> None:
    """A head that trickles in gets 408 at the deadline and the connection is closed; a connection that
    sends nothing is closed; an idle keep-alive connection is closed after its own timeout."""
    limits = HttpLimits(header_timeout=1.0, keep_alive_timeout=1.0)
    async with serve(settings, limits) as s:
        reader, writer = await open_raw(s)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        response, after = await trickle_until_answered(reader, writer, b"X-Slow: 1\r\n", every=0.2, within=4)
        assert response.status == 408, response
        assert response.json()["error"] == "request_timeout"
        assert after < 2.0
        assert await closed_by_server(reader, within=3)
        writer.close()

        reader, writer = await open_raw(s)  # silent: not a byte
        started = time.monotonic()
        assert await closed_by_server(reader, within=3), "a connection that sent nothing was kept open"
        assert time.monotonic() - started < 2.0
        writer.close()

        reader, writer = await open_raw(s)  # idle after an answer
        writer.write(request_head("GET", "/healthz", {}))
        assert (await read_response(reader, within=5)).status == 200
        assert await closed_by_server(reader, within=3), "an idle keep-alive connection was kept open"
        writer.close()


# --- request bodies: deadline, cap -------------------------------------------------------------------------


async def test_trickled_body_is_cut_with_408_and_the_connection_closed(settings: Settings) -> None:
    async with serve(settings, http_body_timeout=1.0) as s:
        account_id, token = await new_integration(s)
        for target, headers in [
            ("/sync/contacts", {**s.admin, "Content-Type": "application/json"}),
            (f"/webhooks/kommo/{account_id}?token={token}", {}),
        ]:
            reader, writer = await open_raw(s)
            writer.write(request_head("POST", target, {**headers, "Content-Length": "500"}) + b"{")
            response, after = await trickle_until_answered(reader, writer, b" ", every=0.2, within=5)
            assert response.status == 408, (target, response)
            assert response.json()["error"] == "request_timeout", target
            assert response.headers["connection"] == "close", target
            assert 0.9 < after < 2.5, (target, after)
            assert await closed_by_server(reader, within=4), target
            writer.close()


async def test_a_large_body_arriving_steadily_gets_more_time(settings: Settings) -> None:
    """The deadline grows with what arrived: 3,000 bytes at ~3 kB/s take ~1 s, twice the 0.5-s body
    timeout, and are served because they keep arriving faster than the 1 kB/s minimum rate."""
    async with serve(settings, http_body_timeout=0.5, http_body_min_rate=1000) as s:
        body = b'{"id": 777}' + b" " * 2989
        reader, writer = await open_raw(s)
        headers = {**s.admin, "Content-Type": "application/json", "Content-Length": str(len(body))}
        writer.write(request_head("POST", "/sync/contacts", headers))
        for i in range(0, len(body), 300):
            writer.write(body[i : i + 300])
            await writer.drain()
            await asyncio.sleep(0.1)
        response = await read_response(reader, within=5)
        writer.close()
    assert response.status == 404, response  # the request was read whole: account 777 is unknown
    assert response.json()["error"] == "unknown_account"


async def test_chunked_body_over_the_cap_is_413_on_every_endpoint(settings: Settings) -> None:
    async with serve(settings, max_body_bytes=1000) as s:
        account_id, token = await new_integration(s)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap must hold while streaming
            yield b'{"id": 1, "pad": "'
            for _ in range(5):
                yield b"x" * 500
            yield b'"}'

        for path, params, headers in [
            ("/sync/contacts", {}, {**s.admin, "Content-Type": "application/json"}),
            ("/integration", {}, {**s.admin, "Content-Type": "application/json"}),
            (f"/webhooks/kommo/{account_id}", {"token": token}, {}),
            (f"/webhooks/unisender/{account_id}", {"token": token}, {}),
        ]:
            r = await s.client.post(path, params=params, headers=headers, content=chunks())
            assert r.status_code == 413, (path, r.status_code, r.text)
            assert r.json()["error"] == "payload_too_large", path
        n = await raw_sql(settings.database_url or "", "SELECT count(*) AS n FROM webhook_event")
        assert n[0]["n"] == 0


async def test_webhook_token_is_checked_before_the_body_is_read(settings: Settings) -> None:
    """A wrong token is answered 401 at once, without waiting for the body the request announced (the old
    code read the whole body first), and the connection is closed since the rest of the body was unread."""
    async with serve(settings) as s:
        account_id, _ = await new_integration(s)
        for provider in ("kommo", "unisender"):
            reader, writer = await open_raw(s)
            target = f"/webhooks/{provider}/{account_id}?token=wrong"
            writer.write(request_head("POST", target, {"Content-Length": "1000"}))
            await writer.drain()
            response = await read_response(reader, within=3)
            assert response.status == 401, (provider, response)
            assert response.json()["error"] == "invalid_token"
            assert response.headers["connection"] == "close"
            writer.close()


# --- JSON bodies: credentials first, no duplicate keys -------------------------------------------------------


async def test_missing_credentials_are_401_before_the_body_is_parsed(settings: Settings) -> None:
    """Without a valid bearer the answer is 401 whatever the body; only an authenticated caller learns that
    the body is malformed (422)."""
    bodies = [b"{not json", b'{"id": 1, "id": 2}', b"[1, 2", b"\xff\xfe"]
    async with serve(settings) as s:
        for path in ("/sync/contacts", "/integration", "/unisender/contacts"):
            for body in bodies:
                for auth in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
                    r = await s.client.post(
                        path, content=body, headers={**auth, "Content-Type": "application/json"}
                    )
                    assert r.status_code == 401, (path, body, auth, r.status_code, r.text)
                    assert r.json()["error"] == "unauthorized"
                r = await s.client.post(
                    path, content=body, headers={**s.admin, "Content-Type": "application/json"}
                )
                assert r.status_code == 422, (path, body, r.text)
        # The account-scoped route takes a webhook token instead of the bearer: without either, 401 too.
        r = await s.client.post(
            "/integration/32720107/unisender", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 401, r.text


async def test_duplicate_json_keys_are_refused(settings: Settings) -> None:
    async with serve(settings) as s:
        json_headers = {**s.admin, "Content-Type": "application/json"}
        body = (
            '{"account_id": 32720107, "subdomain": "acme", "client_id": "c-1", "client_secret": "s-0123456789ab",'
            ' "redirect_uri": "https://contactsync.example/auth/callback", "account_id": 99}'
        )
        r = await s.client.post("/integration", content=body, headers=json_headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "duplicate_key"
        assert "account_id" in r.json()["detail"]
        nested = '{"id": 5, "nested": {"a": 1, "a": 2}}'
        r = await s.client.post("/sync/contacts", content=nested, headers=json_headers)
        assert (r.status_code, r.json()["error"]) == (422, "duplicate_key"), r.text
        rows = await raw_sql(settings.database_url or "", "SELECT count(*) AS n FROM integration")
        assert rows[0]["n"] == 0
        # The same body without the repeat is fine.
        r = await s.client.post(
            "/integration", content=body.replace(', "account_id": 99', ""), headers=json_headers
        )
        assert r.status_code == 201, r.text


# --- client disconnects in metrics ---------------------------------------------------------------------------


def _counts(metrics: str, route: str) -> dict[str, float]:
    pattern = re.compile(
        r'^contactsync_http_requests_total\{method="POST",route="'
        + re.escape(route)
        + r'",status="(\d+)"\} (\S+)$',
        re.M,
    )
    return {status: float(n) for status, n in pattern.findall(metrics)}


async def test_client_disconnects_are_counted_apart_from_server_errors(settings: Settings) -> None:
    async with serve(settings) as s:
        account_id, token = await new_integration(s)
        cases = [
            ("/sync/contacts", "/sync/contacts", {**s.admin, "Content-Type": "application/json"}),
            (f"/webhooks/kommo/{account_id}?token={token}", "/webhooks/kommo/{account_id:int}", {}),
        ]
        before = (await s.client.get("/metrics")).text  # the registry is the process's: compare counts
        for target, _, headers in cases:
            _, writer = await open_raw(s)
            writer.write(request_head("POST", target, {**headers, "Content-Length": "200"}) + b'{"id"')
            await writer.drain()
            writer.close()  # gone before the body arrived
        for _, route, _ in cases:
            old = _counts(before, route)
            deadline = time.monotonic() + 5
            while True:
                now = _counts((await s.client.get("/metrics")).text, route)
                grown = {k: v - old.get(k, 0) for k, v in now.items() if v != old.get(k, 0)}
                if grown:
                    break
                assert time.monotonic() < deadline, f"the request to {route} was not counted"
                await asyncio.sleep(0.05)
            assert grown == {"499": 1}, (route, grown)


# --- documentation and security headers ----------------------------------------------------------------------


async def test_api_documentation_is_off_in_production_unless_enabled(settings: Settings) -> None:
    production = settings.model_copy(update={"env": Environment.PRODUCTION})
    for config, served in [(production, False), (production.model_copy(update={"docs_enabled": True}), True)]:
        async with serve(config) as s:
            for path in ("/docs", "/redoc", "/openapi.json"):
                r = await s.client.get(path)
                assert r.status_code == (200 if served else 404), (path, served, r.status_code)
    async with serve(settings) as s:  # test (and development) environments: on
        assert (await s.client.get("/openapi.json")).status_code == 200
        docs = await s.client.get("/docs")
        assert docs.status_code == 200
        # The documentation page loads Swagger UI from its CDN: its policy allows exactly that.
        assert "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]
        assert docs.headers["x-frame-options"] == "DENY"


async def test_html_pages_forbid_framing_and_foreign_content(settings: Settings) -> None:
    async with serve(settings) as s:
        page = await s.client.get("/auth/callback", params={"error": "access_denied"})
        assert page.status_code == 400
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        for directive in ("default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"):
            assert directive in csp, csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        for r in (await s.client.get("/healthz"), await s.client.get("/nope")):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "content-security-policy" not in r.headers  # JSON: nothing to render
