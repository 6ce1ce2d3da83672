"""A backlog bigger than one job's time: the events job stops at 0.6 × the worker's job timeout (between
batches, each committed), reports ``more`` and enqueues its own continuation, which a real worker then runs
until the inbox is empty. Without the deadline arq would cancel the job mid-batch, roll it back and the same
batch would be tried again and again."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from app.context import build_context
from app.queue import QUEUE_NAME
from app.sync import events
from app.worker import tasks
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import connect_account, kommo_contacts

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _pending(url: str) -> int:
    rows = await raw_sql(url, "SELECT count(*) AS n FROM webhook_event WHERE status = 'pending'")
    return int(rows[0]["n"])


async def test_events_job_stops_at_deadline_and_continues(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = stack.settings.database_url
    assert url
    account = await connect_account(stack, contacts=40, seed=7)
    ids = sorted(await kommo_contacts(stack, account))
    assert len(ids) >= 40
    # Deletions carry no timestamp: each batch asks Kommo what is true (one call of >= 400 ms here).
    for cid in ids[:40]:
        body = f"account[id]={account.account_id}&contacts[delete][0][id]={cid}"
        r = await stack.api.post(
            f"/webhooks/kommo/{account.account_id}",
            params={"token": account.webhook_token},
            content=body,
            headers=FORM,
        )
        assert r.status_code == 200, r.text
    assert await _pending(url) == 40
    monkeypatch.setattr(events, "BATCH", 5)  # 8 batches of 5 instead of one of 500
    r = await stack.kommo.post("/_sandbox/faults", json={"latency_ms": 400})
    assert r.status_code == 200, r.text
    settings = stack.settings.model_copy(update={"worker_job_timeout": 2})  # deadline 1.2 s
    pc = await build_context(settings)
    try:
        # The webhooks' own wake-ups (sent just after intake) are in the queue: only new jobs count below.
        await asyncio.sleep(0.5)
        before = {j.job_id for j in await pc.queue.queued_jobs(queue_name=QUEUE_NAME)}
        started = time.monotonic()
        handled = await tasks.process_events({"process": pc, "job_try": 1}, account.account_id, "kommo")
        took = time.monotonic() - started
        # 1.2 s of 0.4-s batches: stopped after 3 or 4 of the 8 batches, within the deadline plus one batch.
        assert 5 <= handled <= 25, handled
        assert took < 2.0, took
        assert await _pending(url) == 40 - handled
        queued = [
            (j.function, tuple(j.args))
            for j in await pc.queue.queued_jobs(queue_name=QUEUE_NAME)
            if j.job_id not in before and j.function == "process_events"  # (flush_outbox jobs too)
        ]
        assert queued == [("process_events", (account.account_id, "kommo"))], queued
        # Only the continuation may wake the worker below: the intake's wake-ups go.
        redis = aioredis.from_url(settings.redis_url or "")
        await redis.zrem(QUEUE_NAME, *before) if before else None
        await redis.aclose()
    finally:
        await pc.close()

    # A real worker picks the continuation up (no sweeper needed: the events are fresh) and drains the rest.
    async with running_worker(settings):
        for _ in range(300):
            if not await _pending(url):
                break
            await asyncio.sleep(0.1)
    assert await _pending(url) == 0
    rows = await raw_sql(url, "SELECT status, count(*) AS n FROM webhook_event GROUP BY status")
    assert {r["status"]: int(r["n"]) for r in rows} == {"done": 40}
