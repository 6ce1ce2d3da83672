from __future__ import annotations

import httpx
import pytest

from app.config import Settings
from app.context import tls_context
from app.main import create_app
from app.servers import free_port, serve_in_background


async def test_healthz_and_request_id(api: httpx.AsyncClient) -> None:
    r = await api.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert len(r.headers["x-request-id"]) == 32
    r2 = await api.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r2.headers["x-request-id"] == "abc-123"
    r3 = await api.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r3.headers["x-request-id"] != "bad id with spaces"


async def test_readyz_when_everything_is_up(api: httpx.AsyncClient) -> None:
    r = await api.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": {"ok": True}, "redis": {"ok": True}}


async def test_metrics_count_requests_by_route(api: httpx.AsyncClient) -> None:
    await api.get("/healthz")
    body = (await api.get("/metrics")).text
    assert 'contactsync_http_requests_total{method="GET",route="/healthz",status="200"}' in body
    assert "contactsync_http_request_duration_seconds_bucket" in body


@pytest.mark.usefixtures("clean_db")
async def test_readyz_503_when_redis_is_down(settings: Settings) -> None:
    broken = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with (
        serve_in_background(create_app(broken)) as url,
        httpx.AsyncClient(verify=tls_context(), base_url=url) as c,
    ):
        r = await c.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "not_ready"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["redis"]["reason"]


@pytest.mark.usefixtures("clean_db")
async def test_readyz_503_when_database_goes_away(settings: Settings) -> None:
    app = create_app(settings)
    async with serve_in_background(app) as url, httpx.AsyncClient(verify=tls_context(), base_url=url) as c:
        assert (await c.get("/readyz")).status_code == 200
        # Point the running app at a closed port: what a database outage looks like from here.
        from app.db.session import Database, create_engine

        ctx = app.state.ctx
        await ctx.db.dispose()
        ctx.db = Database(create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"))
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"]["ok"] is False
    assert r.json()["checks"]["redis"] == {"ok": True}


@pytest.mark.usefixtures("clean_db")
async def test_webhook_gets_503_not_500_while_the_database_is_down(settings: Settings) -> None:
    app = create_app(settings)
    async with serve_in_background(app) as url, httpx.AsyncClient(verify=tls_context(), base_url=url) as c:
        from app.db.session import Database, create_engine

        ctx = app.state.ctx
        healthy = ctx.db
        ctx.db = Database(create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"))
        r = await c.post("/webhooks/kommo/1", params={"token": "x"}, content=b"account[id]=1")
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "service_unavailable"
        assert r.headers["retry-after"] == "5"
        await ctx.db.dispose()
        ctx.db = healthy  # back up: the same process recovers without a restart
        r = await c.post("/webhooks/kommo/1", params={"token": "x"}, content=b"account[id]=1")
        assert r.status_code == 401
