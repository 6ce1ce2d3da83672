from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request

from app.api.errors import install_error_handlers
from app.config import Settings
from app.context import tls_context
from app.main import create_app
from app.middleware import BodyGuardMiddleware
from app.servers import serve_in_background


async def test_unknown_route_uses_the_envelope(api: httpx.AsyncClient) -> None:
    r = await api.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert "detail" in r.json()


async def test_wrong_method_uses_the_envelope(api: httpx.AsyncClient) -> None:
    r = await api.post("/healthz")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"


@pytest.mark.usefixtures("clean_db")
async def test_body_over_the_cap_is_refused_with_413(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 1000}))
    async with serve_in_background(app) as url, httpx.AsyncClient(verify=tls_context(), base_url=url) as c:
        r = await c.post("/healthz", content=b"x" * 5000)
        assert r.status_code == 413
        assert r.json()["error"] == "payload_too_large"


async def test_streamed_body_over_the_cap_is_refused_while_reading() -> None:
    inner = FastAPI()
    install_error_handlers(inner)

    @inner.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app = BodyGuardMiddleware(inner, max_bytes=1000)

    async def chunks():  # no Content-Length: the cap must hold while streaming
        for _ in range(10):
            yield b"y" * 500

    async with serve_in_background(app) as url, httpx.AsyncClient(verify=tls_context(), base_url=url) as c:
        assert (await c.post("/echo", content=b"z" * 900)).json() == {"size": 900}
        r = await c.post("/echo", content=chunks())
        assert r.status_code == 413
        assert r.json()["error"] == "payload_too_large"
