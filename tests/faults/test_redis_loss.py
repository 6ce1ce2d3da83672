"""Redis is only a wake-up signal: FLUSHALL (every queued job gone) and a restart of the Redis server (the
worker's connection dies) lose nothing; the sweeper re-finds pending events and outbox rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from redis.exceptions import WatchError

from app.config import Settings
from tests.conftest import Stack
from tests.faults.support import (
    PrivateRedis,
    WorkerProcess,
    edit_stream,
    pending_counts,
    wait_worker_ready,
    worker_env,
)
from tests.support.e2e import assert_mirror_exact, connect_account, wait_quiet


async def test_flushall_and_redis_restart_mid_stream(
    stack: Stack, private_redis: PrivateRedis, tmp_path: Path, long_run: bool
) -> None:
    rng = random.Random(4202)
    account = await connect_account(stack, contacts=200, seed=12)
    worker = WorkerProcess(worker_env(stack.settings), tmp_path, "w")
    worker.start()
    try:
        await wait_worker_ready(worker)
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account, within=60)

        # 1. No worker: changes are accepted and their jobs queued in Redis; FLUSHALL drops every job.
        worker.stop()
        await edit_stream(stack, account, 40, rng)
        await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 30})
        stranded = await pending_counts(stack)
        assert stranded["ev"] > 0, stranded
        await asyncio.sleep(0.5)  # the API's coalesced wake-ups (100 ms windows) have reached Redis
        assert private_redis.cli("FLUSHALL") == "OK"
        assert private_redis.cli("DBSIZE") == "0"
        worker.start()
        await wait_worker_ready(worker)
        await wait_quiet(stack, account, within=45)  # only the sweeper can have found them
        assert any(e.get("event") == "sweep.requeued" for e in worker.log_events(current_only=True))
        await assert_mirror_exact(stack, account)

        # 2. FLUSHALL and a Redis server restart under a running worker, while Kommo keeps streaming.
        # A worker that exits anyway is restarted, as compose's `restart: unless-stopped` would (see
        # test_worker_survives_watch_error for why it can exit today).
        stream = asyncio.create_task(edit_stream(stack, account, 150 if long_run else 60, rng))
        for _ in range(3 if long_run else 1):
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            private_redis.cli("FLUSHALL")
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            private_redis.stop()  # SIGKILL, no persistence: every key is gone
            await asyncio.sleep(1.0)
            private_redis.start()
            await asyncio.sleep(1.0)
            if not worker.alive():
                worker.start()
                await wait_worker_ready(worker)
        await stream
        await wait_quiet(stack, account, within=60)
        await assert_mirror_exact(stack, account)
    finally:
        worker.stop()


async def test_worker_survives_watch_error(
    settings: Settings, clean_redis: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exception arq raises when Redis drops mid start_jobs must rebuild the worker, not end the process."""
    import app.worker.settings as ws

    stop = asyncio.Event()
    runs: list[int] = []

    class FakeWorker:
        async def main(self) -> None:
            runs.append(1)
            if len(runs) == 1:
                raise WatchError("A ConnectionError occurred on while watching one or more keys")
            stop.set()

        async def close(self) -> None:
            return None

    monkeypatch.setattr(ws, "build_worker", lambda *a, **k: FakeWorker())
    await asyncio.wait_for(ws.run_worker_forever(settings, stop=stop), timeout=20)
    assert len(runs) == 2
