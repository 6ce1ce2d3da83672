"""The sandbox's own background work: campaign timelines and the notify_url calls of async tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import httpx
import structlog

from sandbox.http import http_client
from sandbox.unisender.methods.tasks import task_json
from sandbox.unisender.state import SandboxState

log = structlog.get_logger(__name__)


class Background:
    """The sandbox's own background work (campaign timelines, task notifications); one per app."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    @property
    def running(self) -> int:
        """Background jobs not yet finished."""
        return len(self._tasks)

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` in the background; cancelled when the app stops."""
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify_tasks(self, task_uuids: list[str]) -> None:
        """Schedule the notify_url calls of these tasks (each when its task completes)."""
        for task_uuid in task_uuids:
            self.spawn(self._notify(task_uuid))

    async def _notify(self, task_uuid: str) -> None:
        task = self.state.exports.get(task_uuid)
        if task is None:
            return
        await asyncio.sleep(max(0.0, task["ready_at"] - time.monotonic()))
        if self._client is None:
            self._client = http_client()
        body = {"result": {**task_json(task), "status": "completed"}}
        try:
            response = await self._client.post(task["notify_url"], json=body, timeout=5.0)
            task["notified"] = response.status_code
        except httpx.HTTPError as exc:
            task["notified"] = type(exc).__name__
            log.info("unisender_sandbox.notify_failed", task_uuid=task_uuid, error=type(exc).__name__)

    async def aclose(self) -> None:
        """Cancel outstanding work and close the client."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
