"""Hook delivery: events produced by a call are POSTed to the account's hooks in background tasks.

Body format and ``auth`` signature: UNISENDER_HOOK_FORMAT.md (simulator-specific; the real payload is UNCONFIRMED).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx
import structlog

from app.sandbox.unisender.state import Account, Hook, SandboxState

log = structlog.get_logger(__name__)


def signed_body(api_key: str, login: str, events: list[dict[str, Any]], retry_count: int | None) -> bytes:
    """Serialise the body with ``auth`` = api_key, md5 those bytes, and put the hex digest in place of the key."""

    def encode(auth: str) -> bytes:
        body: dict[str, Any] = {"auth": auth, "events_by_user": [{"login": login, "events": events}]}
        if retry_count is not None:
            body["retry_count"] = retry_count
        return json.dumps(body, ensure_ascii=False, separators=(", ", ": ")).encode("utf-8")

    digest = hashlib.md5(encode(api_key)).hexdigest()
    return encode(digest)


class HookDispatcher:
    """Owns the delivery tasks and the HTTP client; one per sandbox app."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def emit(self, account: Account, events: list[dict[str, Any]]) -> None:
        """Schedule delivery of ``events`` to every active hook of ``account`` that subscribed to them."""
        if not events:
            return
        for hook in list(account.hooks.values()):
            if hook.status != "active":
                continue
            wanted = [e for e in events if e["event_name"] in hook.events]
            if not wanted:
                continue
            batches = [[e] for e in wanted] if hook.single_event else [wanted]
            for batch in batches:
                task = asyncio.get_running_loop().create_task(self._deliver(account, hook, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Deliveries still in flight (including waits between retries)."""
        return len(self._tasks)

    async def _deliver(self, account: Account, hook: Hook, events: list[dict[str, Any]]) -> None:
        cfg = self.state.config
        if hook.semaphore is None:
            hook.semaphore = asyncio.Semaphore(hook.max_parallel)
        if self._client is None:
            self._client = httpx.AsyncClient()
        for attempt in range(cfg.hook_max_retries + 1):
            if hook.status != "active":
                self._record(account, hook, events, attempt, None, "hook stopped", delivered=False)
                return
            body = signed_body(account.api_key, account.login, events, attempt or None)
            status_code: int | None = None
            error: str | None = None
            async with hook.semaphore:
                try:
                    response = await self._client.post(
                        hook.url,
                        content=body,
                        headers={"Content-Type": "application/json"},
                        timeout=cfg.hook_timeout_seconds,
                    )
                    status_code = response.status_code
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
            ok = status_code == 200
            self._record(account, hook, events, attempt, status_code, error, delivered=ok, body=body)
            if ok:
                return
            log.info("unisender_sandbox.hook_failed", hook_url=hook.url, attempt=attempt, status=status_code)
            if attempt < cfg.hook_max_retries:
                await asyncio.sleep(cfg.hook_retry_interval_seconds)
        # Retries exhausted: the real service stops the hook until setHook status=active.
        hook.status = "stopped"
        log.info("unisender_sandbox.hook_stopped", hook_url=hook.url)

    def _record(
        self,
        account: Account,
        hook: Hook,
        events: list[dict[str, Any]],
        attempt: int,
        status_code: int | None,
        error: str | None,
        *,
        delivered: bool,
        body: bytes | None = None,
    ) -> None:
        self.state.deliveries.append(
            {
                "seq": len(self.state.deliveries),
                "api_key": account.api_key,
                "hook_url": hook.url,
                "retry_count": attempt,
                "at": self.state.now(),
                "status_code": status_code,
                "error": error,
                "delivered": delivered,
                "events": events,
                "body": body.decode("utf-8") if body is not None else None,
            }
        )

    async def aclose(self) -> None:
        """Cancel outstanding deliveries and close the client."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
