"""Webhook registry and delivery, as Kommo's webhook docs describe them.

Each change of a contact becomes an event; events go to every enabled webhook of the account whose settings
include ``{action}_contact``. Delivery runs in background asyncio tasks, never inside the API request that
caused it: per destination a queue, served by ``delivery_concurrency`` workers (1 keeps the order), first
attempts in queue order, failed attempts retried after ``webhook_retry_delays`` in tasks of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from sandbox.http import http_client

from .serialize import account_pairs, form_encode, webhook_contact_pairs
from .store import Account, Contact

if TYPE_CHECKING:
    from .state import KommoSandboxState

CONTACT_ACTIONS = ("add", "update", "delete", "restore")
KNOWN_SETTINGS = frozenset(
    f"{action}_{entity}"
    for entity in ("contact", "lead", "company", "customer", "task")
    for action in ("add", "update", "delete", "restore", "responsible", "note", "status")
) | {
    "status_lead",
    "responsible_lead",
    "add_talk",
    "update_talk",
    "add_chat_template_review",
    "add_message",
    "update_unsorted",
    "add_unsorted",
    "delete_unsorted",
}
# What current deliveries carry (2023 and 2025 captures); "amoCRM-WebHook-client/1.0" was the 2016 agent.
USER_AGENT = "amoCRM-Webhooks/3.0"
MAX_WEBHOOKS = 100


@dataclass
class Webhook:
    id: int
    account_id: int
    destination: str
    settings: list[str]
    sort: int
    created_at: int
    updated_at: int
    created_by: int
    disabled: bool = False
    failures: deque[int] = field(default_factory=deque)  # clock times of failed attempts

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "destination": self.destination,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "account_id": self.account_id,
            "created_by": self.created_by,
            "sort": self.sort,
            "disabled": self.disabled,
            "settings": list(self.settings),
        }


def valid_destination(url: Any) -> bool:
    if not isinstance(url, str) or len(url) > 2000 or any(ch.isspace() for ch in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


@dataclass(slots=True)
class Event:
    action: str
    contact: Contact  # snapshot taken when the change happened


@dataclass(slots=True)
class Body:
    id: int
    webhook_id: int
    destination: str
    payload: bytes
    contacts: list[tuple[str, int]]  # (action, contact id) carried
    duplicate: bool = False


class Dispatcher:
    def __init__(self, state: KommoSandboxState) -> None:
        self.state = state
        self.rng = random.Random(state.config.webhook_seed)
        self.log: deque[dict[str, Any]] = deque(maxlen=state.config.delivery_log_max)
        self._client: httpx.AsyncClient | None = None
        self._pending: dict[int, list[Event]] = {}
        self._queues: dict[int, asyncio.Queue[Body]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outstanding = 0  # bodies not yet finished (incl. scheduled retries) + open batch windows
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_body = 1

    def reseed(self, seed: int) -> None:
        self.rng = random.Random(seed)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = http_client(follow_redirects=False)
            # Only the headers Kommo sends (set per request): not httpx's own Accept and Connection defaults.
            for name in ("Accept", "Connection"):
                del self._client.headers[name]
        return self._client

    # --- emitting --------------------------------------------------------------------------------------------
    def emit(self, account: Account, action: str, contact: Contact) -> None:
        setting = f"{action}_contact"
        hooks = [
            h for h in self.state.webhooks.get(account.id, []) if not h.disabled and setting in h.settings
        ]
        if not hooks:
            return
        cfg = self.state.config
        event = Event(action, contact.snapshot())
        window_ms = cfg.batch_window_ms or (cfg.reorder_window_ms if cfg.reorder else 0)
        for hook in hooks:
            if window_ms <= 0:
                self._enqueue(hook, self._build(account, hook, [event]))
                continue
            pending = self._pending.get(hook.id)
            if pending is not None:
                pending.append(event)
            else:
                self._pending[hook.id] = [event]
                self._busy()
                self._spawn(self._flush_later(account, hook, window_ms / 1000))

    async def _flush_later(self, account: Account, hook: Webhook, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._pending.pop(hook.id, None)
            self._done()
            raise
        events = self._pending.pop(hook.id, [])
        cfg = self.state.config
        if cfg.reorder:
            self.rng.shuffle(events)
        if cfg.batch_window_ms > 0:
            self._enqueue(hook, self._build(account, hook, events))
        else:
            for ev in events:
                self._enqueue(hook, self._build(account, hook, [ev]))
        self._done()

    def _build(self, account: Account, hook: Webhook, events: list[Event]) -> Body:
        groups: dict[str, list[Contact]] = {}
        for ev in events:
            groups.setdefault(ev.action, []).append(ev.contact)
        pairs: list[tuple[str, str]] = []
        carried: list[tuple[str, int]] = []
        for action, contacts in groups.items():
            for i, c in enumerate(contacts):
                pairs += webhook_contact_pairs(account, action, i, c)
                carried.append((action, c.id))
        acct = account_pairs(account, self.state.config.base_domain)
        pairs = acct + pairs if self.state.config.account_block_first else pairs + acct
        body = Body(self._next_body, hook.id, hook.destination, form_encode(pairs), carried)
        self._next_body += 1
        return body

    def _enqueue(self, hook: Webhook, body: Body) -> None:
        bodies = [body]
        if self.state.config.duplicate_rate > 0 and self.rng.random() < self.state.config.duplicate_rate:
            bodies.append(Body(body.id, body.webhook_id, body.destination, body.payload, body.contacts, True))
        queue = self._queues.get(hook.id)
        if queue is None:
            queue = self._queues[hook.id] = asyncio.Queue()
            for _ in range(max(1, self.state.config.delivery_concurrency)):
                self._spawn(self._worker(hook, queue))
        for b in bodies:
            self._busy()
            queue.put_nowait(b)

    # --- delivering ------------------------------------------------------------------------------------------
    async def _worker(self, hook: Webhook, queue: asyncio.Queue[Body]) -> None:
        while True:
            body = await queue.get()
            try:
                await self._attempt(hook, body, 1)
            finally:
                queue.task_done()

    async def _attempt(self, hook: Webhook, body: Body, attempt: int) -> None:
        """Deliver once; on failure schedule the next retry. Balances one _busy() when the body is finished."""
        if hook.disabled or hook not in self.state.webhooks.get(hook.account_id, []):
            self._log(hook, body, attempt, None, "skipped: webhook disabled or removed", 0.0, ok=False)
            self._done()
            return
        cfg = self.state.config
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        request_id = str(uuid.uuid4())  # a new id per attempt (whether retries reuse it is unconfirmed)
        try:
            resp = await self.client.post(
                hook.destination,
                content=body.payload,
                headers={
                    "User-Agent": USER_AGENT,
                    "X-Amocrm-Requestid": request_id,
                    "Accept-Encoding": "gzip",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                timeout=cfg.webhook_timeout,
            )
            status = resp.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        ok = status is not None and 100 <= status <= 299
        self._log(
            hook, body, attempt, status, error, time.monotonic() - started, ok=ok, request_id=request_id
        )
        if ok:
            self._done()
            return
        now = self.state.clock.now()
        hook.failures.append(now)
        while hook.failures and hook.failures[0] <= now - cfg.webhook_disable_window:
            hook.failures.popleft()
        if len(hook.failures) > cfg.webhook_disable_failures:
            # Kommo's webhook docs: > N invalid answers in the window and the latest one invalid.
            hook.disabled = True
        delays = cfg.webhook_retry_delays
        if attempt <= len(delays) and not hook.disabled:
            self._spawn(self._retry_later(hook, body, attempt + 1, delays[attempt - 1]))
        else:
            self._done()

    async def _retry_later(self, hook: Webhook, body: Body, attempt: int, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._done()
            raise
        await self._attempt(hook, body, attempt)

    def _log(
        self,
        hook: Webhook,
        body: Body,
        attempt: int,
        status: int | None,
        error: str | None,
        seconds: float,
        *,
        ok: bool,
        request_id: str | None = None,
    ) -> None:
        self.log.append(
            {
                "body_id": body.id,
                "webhook_id": hook.id,
                "destination": hook.destination,
                "attempt": attempt,
                "request_id": request_id,
                "status": status,
                "error": error,
                "ok": ok,
                "duplicate": body.duplicate,
                "at": self.state.clock.now(),
                "duration_ms": round(seconds * 1000, 1),
                "contacts": [list(x) for x in body.contacts],
                "body": body.payload.decode(),
            }
        )

    # --- bookkeeping -----------------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _busy(self) -> None:
        self._outstanding += 1
        self._idle.clear()

    def _done(self) -> None:
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._outstanding = 0
            self._idle.set()

    @property
    def outstanding(self) -> int:
        return self._outstanding

    async def drain(self, seconds: float) -> bool:
        """Wait until no batch window is open and no body is queued, in flight or waiting for a retry."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._pending.clear()
        self._queues.clear()
        self._outstanding = 0
        self._idle.set()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
