"""Hook delivery: events produced by a call are POSTed to the account's hooks in background tasks.

Bodies follow the documented layouts exactly:

- batched (``single_event=0``, the default): ``{"auth", "events_by_user": [{"login", "events": [{"event_name",
  "event_time", "event_data"}]}]}``, one body per call's events;
- flat (``single_event=1``): one body per event, ``{"auth", "login", "event_name", "event_time", <event_data
  fields>}``.

Serialized as PHP's ``json_encode`` does (compact, ``auth`` first, ``/`` as ``\\/``, non-ASCII as ``\\uXXXX``);
``auth`` = md5 of the body text with the account's API key in place of the auth value. A resend after a
failed attempt carries a top-level ``retry_count`` (1, 2…) and a new ``auth``.

Events are the classic API's: ``unsubscribe``/``subscribe`` with ``event_data`` ``{"email", "list_id"}`` (one
event per list), ``email_status`` ``{"email", "status", "status_group", "campaign_id"}``, ``campaign_status``
``{"campaign_id", "status"}``, and the sandbox's own name for an edit made in Unisender's UI (the real name
is undocumented) ``contact_data_change`` ``{"email", "fields": {name: new value}}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx
import structlog

from sandbox.http import http_client
from sandbox.unisender.state import Account, Contact, Hook, SandboxState

log = structlog.get_logger(__name__)

# contact_data_change: the sandbox's name (Unisender documents a "user data change" event class, not its name).
CONTACT_DATA_EVENT = "contact_data_change"
HOOK_EVENTS = frozenset({"email_status", "subscribe", "unsubscribe", "campaign_status", CONTACT_DATA_EVENT})
_AUTH_PLACEHOLDER = "#" * 32  # never produced by json_encode for anything else in a body


def php_json(value: Any) -> str:
    """``json_encode($value)`` with PHP's default flags: compact, ``\\/``, ``\\uXXXX`` for non-ASCII."""
    # "/" only ever occurs inside strings in JSON text, so escaping every occurrence is exact.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


def signed_body(api_key: str, payload: dict[str, Any], *, unsigned: bool = False) -> bytes:
    """The body with ``auth`` first: md5 of the text with the key in place of the auth value."""
    if unsigned:
        return php_json(payload).encode("ascii")
    text = php_json({"auth": _AUTH_PLACEHOLDER, **payload})
    digest = hashlib.md5(text.replace(_AUTH_PLACEHOLDER, api_key, 1).encode("utf-8")).hexdigest()
    return text.replace(_AUTH_PLACEHOLDER, digest, 1).encode("ascii")


def batched_payload(login: str, events: list[dict[str, Any]], retry_count: int | None) -> dict[str, Any]:
    """The ``single_event=0`` body (without ``auth``)."""
    payload: dict[str, Any] = {"events_by_user": [{"login": login, "events": events}]}
    if retry_count:
        payload["retry_count"] = retry_count
    return payload


def flat_payload(login: str, event: dict[str, Any], retry_count: int | None) -> dict[str, Any]:
    """The ``single_event=1`` body (without ``auth``): the event's data at the top level."""
    payload: dict[str, Any] = {
        "login": login,
        "event_name": event["event_name"],
        "event_time": event["event_time"],
        **event["event_data"],
    }
    if retry_count:
        payload["retry_count"] = retry_count
    return payload


def event(name: str, when: str, data: dict[str, Any]) -> dict[str, Any]:
    """One event as it appears in ``events``."""
    return {"event_name": name, "event_time": when, "event_data": data}


def list_events(name: str, when: str, email: str | None, list_ids: list[int]) -> list[dict[str, Any]]:
    """``subscribe``/``unsubscribe`` events: one per list (an address in no list: one without a list)."""
    if email is None:
        return []
    if not list_ids:
        return [event(name, when, {"email": email})]
    return [event(name, when, {"email": email, "list_id": list_id}) for list_id in list_ids]


def account_unsubscribe_events(contact: Contact, when: str) -> list[dict[str, Any]]:
    """An account-wide unsubscribe: one ``unsubscribe`` event per list the address is in."""
    return list_events("unsubscribe", when, contact.email, sorted(contact.lists))


def _wanted(hook: Hook, item: dict[str, Any]) -> bool:
    statuses = hook.events.get(item["event_name"])
    if statuses is None:
        return False
    if statuses in ("", "*"):
        return True
    # A status filter (events[email_status]=ok_read,ok_unsubscribed); its real syntax is undocumented.
    return str(item["event_data"].get("status", "")) in {s.strip() for s in statuses.split(",")}


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
            wanted = [e for e in events if _wanted(hook, e)]
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

    def _body(self, account: Account, hook: Hook, events: list[dict[str, Any]], attempt: int) -> bytes:
        if hook.single_event:
            payload = flat_payload(account.login, events[0], attempt)
        else:
            payload = batched_payload(account.login, events, attempt)
        return signed_body(account.api_key, payload, unsigned=self.state.config.hook_unsigned)

    async def _deliver(self, account: Account, hook: Hook, events: list[dict[str, Any]]) -> None:
        cfg = self.state.config
        if hook.semaphore is None:
            hook.semaphore = asyncio.Semaphore(hook.max_parallel)
        if self._client is None:
            self._client = http_client()
        for attempt in range(cfg.hook_max_retries + 1):
            if hook.status != "active":
                self._record(account, hook, events, attempt, None, "hook stopped", delivered=False)
                return
            body = self._body(account, hook, events, attempt)
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
