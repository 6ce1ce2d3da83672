"""PostgreSQL goes silent mid-stream (a partition: the TCP proxy in front of the shared server accepts and
holds connections and forwards nothing, on new and existing ones alike). Unlike a refused connection, which
fails at once, every database call now waits for an answer that never comes.

Webhooks are answered 503 (with Retry-After, not acknowledged) within the intake deadline, well inside the
2 s after which Kommo counts a delivery as failed; /readyz says 503; a worker job fails at its statement
deadline and is retried, instead of waiting out the partition. After the thaw the same processes answer 200
again, and everything acknowledged is processed: the mirror is exact."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.context import tls_context
from app.main import create_app
from app.queue import create_queue
from app.servers import serve_in_background
from sandbox.unisender import signed_body
from sandbox.unisender.hooks import batched_payload, event
from tests.conftest import Stack, raw_sql
from tests.faults.support import (
    CuttableProxy,
    PrivateRedis,
    WorkerProcess,
    edit_stream,
    post_webhook,
    recorded_bodies,
    wait_worker_ready,
    worker_env,
)
from tests.support.e2e import Account, assert_mirror_exact, connect_account, wait_quiet

pytestmark = pytest.mark.slow

WEBHOOK_BOUND = 1.5  # seconds: the intake deadline (1 s) plus rendering, on a busy shared machine
HOOK_DEADLINE = 1.8  # seconds: the API's Unisender hook deadline here (its own, longer than Kommo's)
PROBE_JOB = "silent-db-probe"


async def _timed_post(api: httpx.AsyncClient, account: Account, body: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await post_webhook(api, account, body)
    return response, time.monotonic() - started


async def _delivered(api: httpx.AsyncClient, account: Account, body: str) -> None:
    """Kommo's behaviour: a delivery not answered 2xx is retried (here every 0.2 s, for up to 15 s)."""
    deadline = time.monotonic() + 15
    while True:
        response = await post_webhook(api, account, body)
        if response.status_code == 200:
            return
        assert response.status_code == 503, (response.status_code, response.text)
        assert time.monotonic() < deadline, f"still {response.status_code} 15 s after the thaw"
        await asyncio.sleep(0.2)


def _unsubscribe() -> dict[str, object]:
    return event("unsubscribe", "2026-12-01 00:00:00", {"email": "someone@example.com"})


def _probe_failures(worker: WorkerProcess) -> list[dict[str, object]]:
    return [
        e
        for e in worker.log_events()
        if e.get("event") == "job.db_unavailable" and e.get("job_id") == PROBE_JOB
    ]


async def test_silent_database_answers_503_fast_and_jobs_retry(
    stack: Stack, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    rng = random.Random(1107)
    url = stack.settings.database_url
    assert url
    account = await connect_account(stack, contacts=60, seed=17)
    direct = WorkerProcess(worker_env(stack.settings), tmp_path, "direct")
    direct.start()
    await wait_worker_ready(direct)
    r = await stack.api.post("/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id})
    assert r.status_code == 202, r.text
    await wait_quiet(stack, account, within=60)
    direct.stop()

    # Real Kommo bodies: recorded at the sandbox, then forgotten by our inbox (no worker ran on them).
    await stack.kommo.delete("/_sandbox/deliveries")
    await edit_stream(stack, account, 30, rng)
    await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 30})
    bodies = await recorded_bodies(stack)
    assert len(bodies) >= 24
    await raw_sql(url, "DELETE FROM webhook_event WHERE status='pending'")

    parts = urlsplit(url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied = stack.settings.model_copy(
        update={
            "database_url": url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}"),
            "unisender_hook_deadline": HOOK_DEADLINE,
        }
    )
    # The worker's deadlines are short here so the test is; the API keeps the defaults (intake: 1 s).
    worker = WorkerProcess(
        worker_env(
            proxied,
            CONTACTSYNC_DB_STATEMENT_TIMEOUT="1",
            CONTACTSYNC_DB_CONNECT_TIMEOUT="1",
            CONTACTSYNC_DB_POOL_TIMEOUT="1",
        ),
        tmp_path,
        "proxied",
    )
    worker.start()
    queue = await create_queue(private_redis.url)
    first, held, rest = bodies[:8], bodies[8:16], bodies[16:]
    try:
        await wait_worker_ready(worker)
        async with (
            serve_in_background(create_app(proxied)) as base,
            httpx.AsyncClient(verify=tls_context(), base_url=base, timeout=30) as api,
        ):
            for body in first:
                assert (await post_webhook(api, account, body)).status_code == 200

            proxy.freeze()
            # One at a time, then all at once: a write stuck on the silent database holds nobody else.
            answers = [await _timed_post(api, account, body) for body in held[:3]]
            answers += await asyncio.gather(*(_timed_post(api, account, body) for body in held[3:]))
            for response, _ in answers:
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "service_unavailable"
                assert response.headers["retry-after"]
            slowest = max(seconds for _, seconds in answers)
            assert slowest < WEBHOOK_BOUND, f"a webhook waited {slowest:.2f} s for the silent database"
            # A Unisender delivery has its own, longer budget (Unisender waits 3 s), and still hears "later".
            started = time.monotonic()
            hook = await api.post(
                f"/webhooks/unisender/{account.account_id}",
                params={"token": account.webhook_token},
                content=signed_body(account.api_key, batched_payload("acme", [_unsubscribe()], 0)),
                headers={"Content-Type": "application/json"},
            )
            waited = time.monotonic() - started
            assert hook.status_code == 503, hook.text
            assert HOOK_DEADLINE - 0.1 < waited < HOOK_DEADLINE + 0.5, waited

            started = time.monotonic()
            ready = await api.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["database"]["ok"] is False
            assert time.monotonic() - started < 2 * WEBHOOK_BOUND

            # A job that needs the database while it is silent fails at its deadline and is retried.
            enqueued = time.monotonic()
            await queue.enqueue_job("process_events", account.account_id, "kommo", _job_id=PROBE_JOB)
            first_failure: float | None = None
            while True:
                tries = {e.get("job_try") for e in _probe_failures(worker)}
                if tries and first_failure is None:
                    first_failure = time.monotonic() - enqueued
                if {1, 2} <= tries:
                    break
                assert time.monotonic() - enqueued < 20, f"probe job tries that failed so far: {tries}"
                await asyncio.sleep(0.1)
            assert first_failure is not None
            assert first_failure < 5, f"the job waited {first_failure:.1f} s before failing"
            assert worker.alive()

            proxy.thaw()
            for body in held + rest:  # Kommo retries what was not acknowledged
                await _delivered(api, account, body)
            deadline = time.monotonic() + 15
            while (await api.get("/readyz")).status_code != 200:  # recovered, same process
                assert time.monotonic() < deadline, "not ready 15 s after the thaw"
                await asyncio.sleep(0.2)

        await wait_quiet(stack, account, within=60)
        await assert_mirror_exact(stack, account)
        # The probe job itself went through once the database answered again: at its next try, which the
        # backoff (up to 60 s) may put well after the thaw when the freeze outlasted several of its tries.
        deadline = time.monotonic() + 70
        while await queue.exists(f"arq:job:{PROBE_JOB}"):
            assert time.monotonic() < deadline, "the probe job is still queued 70 s after the thaw"
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await queue.aclose()
        await proxy.close()
