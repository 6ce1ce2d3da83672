"""A worker process serves its own Prometheus metrics (``--metrics-port`` / CONTACTSYNC_WORKER_METRICS_PORT):
the jobs it ran are counted there, not in some API process's registry."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from app.config import Settings
from app.queue import enqueue
from app.servers import free_port
from tests.faults.support import WorkerProcess, wait_worker_ready, worker_env

JOB_LINE = 'contactsync_jobs_total{function="process_events",result="ok"}'


async def test_the_worker_serves_the_jobs_it_ran(
    settings: Settings, clean_db: str, clean_redis: None, tmp_path: Path
) -> None:
    from app.context import build_context

    port = free_port()
    worker = WorkerProcess(worker_env(settings, CONTACTSYNC_WORKER_METRICS_PORT=str(port)), tmp_path).start()
    pc = await build_context(settings)
    try:
        await wait_worker_ready(worker)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            before = (await client.get("/metrics")).text
            assert "contactsync_events_pending" in before
            assert JOB_LINE not in before
            # An account with no pending events: the job runs, finds nothing, and counts itself.
            await enqueue.process_events(pc.queue, 424242)
            deadline = time.monotonic() + 20
            body = ""
            while time.monotonic() < deadline:
                body = (await client.get("/metrics")).text
                if JOB_LINE in body:
                    break
                await asyncio.sleep(0.2)
            assert f"{JOB_LINE} 1.0" in body
    finally:
        await pc.close()
        worker.stop()
    assert worker.proc is not None
    assert worker.proc.returncode == 0
