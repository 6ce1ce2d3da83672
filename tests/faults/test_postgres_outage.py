"""PostgreSQL unreachable mid-stream (a TCP proxy in front of the shared server is cut and restored): the
webhook endpoint answers 503 (Kommo retries), never 500; it recovers without a restart; nothing it
acknowledged with 2xx is lost."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from app.context import tls_context
from app.main import create_app
from app.servers import serve_in_background
from tests.conftest import Stack, raw_sql
from tests.faults.support import (
    CuttableProxy,
    WorkerProcess,
    edit_stream,
    post_webhook,
    recorded_bodies,
    wait_worker_ready,
    worker_env,
)
from tests.support.e2e import assert_mirror_exact, connect_account, wait_quiet


async def test_webhooks_answer_503_while_postgres_is_down(
    stack: Stack, tmp_path: Path, long_run: bool
) -> None:
    rng = random.Random(4303)
    url = stack.settings.database_url
    assert url
    account = await connect_account(stack, contacts=100, seed=13)
    worker = WorkerProcess(worker_env(stack.settings), tmp_path, "w")
    worker.start()
    await wait_worker_ready(worker)
    r = await stack.api.post("/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id})
    assert r.status_code == 202, r.text
    await wait_quiet(stack, account, within=60)
    worker.stop()

    # Real Kommo bodies: recorded at the sandbox, then forgotten by our inbox (no worker ran on them).
    await stack.kommo.delete("/_sandbox/deliveries")
    await edit_stream(stack, account, 160 if long_run else 60, rng)
    await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 30})
    bodies = await recorded_bodies(stack)
    assert len(bodies) >= 50
    await raw_sql(url, "DELETE FROM webhook_event WHERE status='pending'")

    parts = urlsplit(url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied_url = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    proxied = stack.settings.model_copy(update={"database_url": proxied_url})
    statuses: dict[int, int] = {}
    acknowledged: set[int] = set()
    try:
        async with (
            serve_in_background(create_app(proxied)) as base,
            httpx.AsyncClient(verify=tls_context(), base_url=base, timeout=10) as api,
        ):
            outages = 3 if long_run else 1
            cut_at = sorted(rng.sample(range(5, len(bodies) - 5), outages))
            for i, body in enumerate(bodies):
                if i in cut_at:
                    proxy.cut()
                    down: list[int] = []
                    for j in range(i, min(i + 5, len(bodies))):
                        resp = await post_webhook(api, account, bodies[j])
                        down.append(resp.status_code)
                        if resp.status_code == 503:
                            assert set(resp.json()) >= {"error", "detail"}, resp.text
                    ready = await api.get("/readyz")
                    assert ready.status_code == 503, ready.text
                    assert all(s == 503 for s in down), f"while PostgreSQL is down: {down}"
                    proxy.restore()
                resp = await post_webhook(api, account, body)
                for _ in range(50):  # Kommo retries a non-2xx delivery; bounded: ~5 s
                    if resp.status_code == 200:
                        break
                    assert resp.status_code == 503, (resp.status_code, resp.text)
                    await asyncio.sleep(0.1)
                    resp = await post_webhook(api, account, body)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                assert resp.status_code == 200, resp.text
                acknowledged.add(i)
            assert (await api.get("/readyz")).status_code == 200  # recovered, same process
    finally:
        await proxy.close()
    assert acknowledged == set(range(len(bodies)))
    worker.start()
    try:
        await wait_worker_ready(worker)
        await wait_quiet(stack, account, within=60)
        await assert_mirror_exact(stack, account)
    finally:
        worker.stop()
