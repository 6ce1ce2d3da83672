"""Webhook intake: verify, store the raw body, answer fast; processing happens in the worker after commit."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import metrics
from app.accounts import repository as accounts_repo
from app.accounts.webhook_auth import WebhookAuth, WebhookIdentity
from app.connectors.kommo.exceptions import KommoWebhookParseError
from app.connectors.kommo.webhooks import parse_webhook
from app.connectors.unisender.exceptions import UnisenderHookParseError
from app.connectors.unisender.hooks import HOOK_EVENT_NAMES, read_delivery, verify_hook_auth
from app.context import ProcessContext
from app.db.session import after_commit
from app.db.states import EventSource, EventStatus
from app.errors import BadRequest, ServiceUnavailable, Unauthorized
from app.queue import enqueue
from app.queue.enqueue import WakeUps
from app.sync import inbox_repo
from app.sync.inbox_repo import NewEvent

log = structlog.get_logger(__name__)


def _refuse_nul(body: bytes) -> None:
    # Neither provider sends NUL bytes, and PostgreSQL text cannot store them.
    if b"\x00" in body:
        raise BadRequest("The body contains NUL bytes.", code="invalid_webhook_body")


def _dedupe_key(source: str, account_id: int, body: bytes, *, unique: bool) -> str:
    # A body that carries versions (updated_at) is the same change when it arrives twice. Deletions carry no
    # version: delete → restore → delete yields the same body twice, so those are never deduplicated (they
    # are verified against Kommo when processed, so a duplicate is harmless).
    salt = f"{time.time_ns()}" if unique else ""
    return hashlib.sha256(f"{source}:{account_id}:{salt}:".encode() + body).hexdigest()


@dataclass(slots=True, eq=False)
class _Pending:
    event: NewEvent
    done: asyncio.Future[bool]
    until: float | None
    sent: bool = False  # its INSERT has gone to the database: the outcome is no longer ours to decide

    @property
    def answer_by(self) -> float | None:
        """When a caller whose row was sent answers at the latest (its statement ends before)."""
        return None if self.until is None else self.until + _IN_FLIGHT_GRACE


# Past its own deadline, a caller whose row has been sent waits this much longer for the statement's outcome
# (the statement is bounded to end by then): answering 503 for a row that then commits would have the sender
# deliver it again, and a body without a version (a deletion) would be stored twice.
_IN_FLIGHT_GRACE = 0.3
# A row is sent only with at least this long left before its caller's answer-by time: a shorter statement
# deadline would fail the whole batch under load, so such a caller is answered 503 at once, its row unsent.
_MIN_STATEMENT = 0.2
# How late, past its answer-by time, a caller still takes its statement's outcome: only the event loop's own
# delay in delivering it (the statement itself has ended by then).
_LOOP_SLACK = 0.5


class InboxWriter:
    """Group commit for webhook intake: bodies that arrive while a write is in flight go into the next one.

    Every caller still waits until its own row has committed (a webhook is acknowledged only once durable),
    but under load one INSERT and one commit serve many requests: the round trip, the pool checkout and the
    commit's WAL flush are paid per batch, not per webhook. At low load a batch is one body, as before.

    A caller's deadline means "not stored", as far as the client can know. One whose deadline passes before its
    row was sent (still queued, or its write still waiting for a connection) withdraws it, so nothing it did
    not acknowledge is stored later. One whose row was sent waits for the statement's outcome, so a 503 is not
    answered for a row the statement commits in time. Each statement has at most ``deadline`` seconds (the
    driver's own timer), and ends before its callers' deadlines plus a short grace: a connection that stops
    answering fails the batch (its callers answer 503) and is discarded, instead of holding every later
    webhook behind it. A statement the driver gave up on may still commit on the server, so after such a 503
    a redelivered body may be stored twice (at least once, never lost; a deletion is verified against Kommo).
    """

    def __init__(self, pc: ProcessContext, *, max_batch: int = 256, deadline: float = 1.0) -> None:
        self._pc = pc
        self._max_batch = max_batch
        self._deadline = deadline
        self._waiting: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def store(self, event: NewEvent, *, until: float | None = None) -> bool:
        """Store one body; True when it is new, False when the same delivery was stored before. Raises
        TimeoutError when ``until`` (event loop time) passes before its row was sent, or when the statement
        fails by its own deadline (nothing stored in either case)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(event, loop.create_future(), until)
        self._waiting.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop())
        try:
            answer_by = pending.answer_by
            if until is not None and answer_by is not None:
                # A wait on a shield, not on the future: the write may be shared with others.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(until):
                        return await asyncio.shield(pending.done)
                if not pending.sent:
                    raise TimeoutError  # withdrawn below: a write skips a row whose future is done
                # Its statement ends by the answer-by time (bounded in _send), also when it is sent again on
                # a fresh connection; past it the outcome is only late in reaching us.
                async with asyncio.timeout_at(answer_by + _LOOP_SLACK):
                    return await asyncio.shield(pending.done)
            return await pending.done
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ValueError):
                self._waiting.remove(pending)
            pending.done.cancel()  # its outcome has no reader; a write not yet sent leaves its row out
            raise

    async def close(self) -> None:
        """Finish what is queued (shutdown)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_loop(self) -> None:
        # Ends as soon as nothing waits; the next store() starts a new loop.
        batch: list[_Pending] = []
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write(batch)
                batch = []
        except BaseException as exc:
            # Cancelled (shutdown) or a bug: nobody may wait forever for an answer.
            for pending in batch + self._waiting:
                if not pending.done.done():
                    pending.done.set_exception(
                        exc if isinstance(exc, Exception) else ConnectionError("shutting down")
                    )
            self._waiting.clear()
            raise

    def _send(self, conn: AsyncConnection, batch: list[_Pending]) -> Awaitable[dict[str, int]]:
        # Runs once a connection is in hand (again, when a dead connection is replaced), with no await before
        # the statement goes out: a caller either withdrew before this point (its future is done) or is
        # marked sent and waits for the outcome until its answer-by time, which the statement ends before.
        now = asyncio.get_running_loop().time()
        deadline = self._deadline
        unique: dict[str, NewEvent] = {}
        for pending in batch:
            if pending.done.done():
                continue
            answer_by = pending.answer_by
            if answer_by is not None and answer_by - now < _MIN_STATEMENT:
                pending.done.set_exception(TimeoutError())  # too late to send: answered 503, not stored
                continue
            pending.sent = True
            unique.setdefault(pending.event.dedupe_key, pending.event)
            if answer_by is not None:
                deadline = min(deadline, answer_by - now)
        return inbox_repo.store_events(conn, list(unique.values()), deadline=deadline)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            stored = await self._pc.db.run_autocommit(lambda conn: self._send(conn, batch))
        except Exception as exc:
            for pending in batch:
                if not pending.done.done():  # a caller that went away (client disconnect) wants no answer
                    pending.done.set_exception(exc)
            return
        claimed: set[str] = set()
        for pending in batch:
            if pending.done.done():  # withdrawn, or its client went away: wants no answer
                continue
            # The same body twice in one batch: the first is new, the second a duplicate, as if sequential.
            key = pending.event.dedupe_key
            pending.done.set_result(key in stored and key not in claimed)
            claimed.add(key)


ReadBody = Callable[[], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class WebhookIntake:
    """What webhook intake needs, built once per API process: the hot path touches no ORM session.

    Each webhook is authenticated from its URL before a byte of its body is read (a caller without the
    token costs no body read), and its database work (token check, store) has ``deadline`` seconds in all:
    past that it is answered 503 and not acknowledged, so the sender retries. Kommo gives up on a delivery
    after 2 s and counts it as failed, so it must hear "later" well before then, not wait for a database
    that stopped answering. Reading the body is not counted (the body deadline bounds that). A Unisender
    delivery has ``unisender_deadline``: its sender waits 3 s, and one body may carry a campaign's thousands
    of events, which a loaded box cannot always store within Kommo's budget (each refused try would repeat
    the same work).
    """

    pc: ProcessContext
    auth: WebhookAuth
    wakeups: WakeUps
    writer: InboxWriter
    deadline: float = 1.0
    unisender_deadline: float = 2.5

    async def accept_kommo(self, account_id: int, token: str | None, read_body: ReadBody) -> bool | None:
        """Verify, read, parse-check and store a Kommo body; True when new, None when the client went away.
        Its INSERT is the whole unit of work."""
        return await self._accept(
            EventSource.KOMMO, account_id, token, read_body, self._store_kommo, self.deadline
        )

    async def accept_unisender(self, account_id: int, token: str | None, read_body: ReadBody) -> bool | None:
        """Verify, read and store a Unisender hook (unsubscribes); True when new, None when the client left."""
        return await self._accept(
            EventSource.UNISENDER,
            account_id,
            token,
            read_body,
            self._store_unisender,
            self.unisender_deadline,
        )

    async def _accept(
        self,
        provider: str,
        account_id: int,
        token: str | None,
        read_body: ReadBody,
        store: Callable[[int, WebhookIdentity, bytes, float], Awaitable[bool]],
        deadline: float,
    ) -> bool | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(deadline):
                identity = await self.auth.verify(self.pc.db, account_id, token)
            spent = loop.time() - started
            body = await read_body()
            if body is None:
                return None
            return await store(account_id, identity, body, loop.time() + deadline - spent)
        except TimeoutError:
            metrics.WEBHOOKS.labels(provider, "db_timeout").inc()
            raise ServiceUnavailable(
                f"The database did not answer within {deadline:g} s; retry shortly."
            ) from None

    async def _store_kommo(
        self, account_id: int, identity: WebhookIdentity, body: bytes, until: float
    ) -> bool:
        _refuse_nul(body)
        try:
            batch = parse_webhook(body)
        except KommoWebhookParseError as exc:
            metrics.WEBHOOKS.labels(EventSource.KOMMO, "unparsable").inc()
            raise BadRequest(f"Unparsable Kommo webhook body: {exc}", code="invalid_webhook_body") from exc
        if batch.account_id is not None and batch.account_id != account_id:
            metrics.WEBHOOKS.labels(EventSource.KOMMO, "wrong_account").inc()
            raise BadRequest(
                "account[id] in the body does not match the URL's account", code="account_mismatch"
            )
        try:
            identity.check_account(batch)
        except BadRequest:
            metrics.WEBHOOKS.labels(EventSource.KOMMO, "wrong_account").inc()
            raise
        has_deletions = any(e.contact is None for e in batch.events)
        dedupe_key = _dedupe_key(EventSource.KOMMO, account_id, body, unique=has_deletions)
        text = body.decode("utf-8", errors="replace")
        new = await self.writer.store(
            NewEvent(account_id=account_id, source=EventSource.KOMMO, dedupe_key=dedupe_key, body=text),
            until=until,
        )
        if not new:
            metrics.WEBHOOKS.labels(EventSource.KOMMO, "duplicate").inc()
            return False
        metrics.WEBHOOKS.labels(EventSource.KOMMO, "accepted").inc()
        if batch.events:
            # After the commit (autocommit: the insert has committed when it returns).
            self.wakeups.poke("process_events", account_id, EventSource.KOMMO.value)
        return True

    async def _store_unisender(
        self, account_id: int, identity: WebhookIdentity, body: bytes, until: float
    ) -> bool:
        async with asyncio.timeout_at(until), self.pc.db.session_scope() as session:
            return await accept_unisender_hook(session, self.pc, account_id, body)


async def accept_unisender_hook(
    session: AsyncSession, pc: ProcessContext, account_id: int, body: bytes
) -> bool:
    """Verify and store a Unisender hook delivery, one inbox row per event; True when anything was new.

    Any authenticated body is answered 200 and kept, even one we cannot read: a 4xx makes Unisender
    redeliver the same bytes for a day and then stop the hook, after which no unsubscribe would reach us.
    """
    esp = await accounts_repo.get_esp_account(session, account_id)
    if esp is not None and not verify_hook_auth(body, esp.api_key):
        metrics.WEBHOOKS.labels(EventSource.UNISENDER, "bad_auth").inc()
        raise Unauthorized(
            "The hook's auth signature does not match this account's key.", code="invalid_signature"
        )
    rows, labels = _unisender_rows(account_id, body)
    stored = await inbox_repo.insert_events(session, rows)
    for row, event in zip(rows, labels, strict=True):
        if row.dedupe_key not in stored:
            outcome = "duplicate"
        else:
            outcome = "accepted" if row.status == EventStatus.PENDING else "unrecognised"
        metrics.UNISENDER_HOOK_EVENTS.labels(event, outcome).inc()
    new = bool(stored) or not rows  # a delivery with no events has nothing to repeat
    metrics.WEBHOOKS.labels(EventSource.UNISENDER, "accepted" if new else "duplicate").inc()
    if any(row.status == EventStatus.PENDING and row.dedupe_key in stored for row in rows):
        after_commit(session, lambda: enqueue.process_events(pc.queue, account_id, EventSource.UNISENDER))
    return new


def _unisender_key(account_id: int, identity: str) -> str:
    return hashlib.sha256(f"unisender:{account_id}:{identity}".encode()).hexdigest()


def _unisender_rows(account_id: int, body: bytes) -> tuple[list[NewEvent], list[str]]:
    """The inbox rows of a delivery, each with its metric label (the event name, or ``unknown``).

    Each event is deduplicated on its own identity, so a redelivery (new ``auth``, a ``retry_count``) or the
    same event in another delivery adds nothing. A body in no readable layout is kept whole.
    """
    try:
        delivery = read_delivery(body)
    except UnisenderHookParseError as exc:
        return _unreadable_body(account_id, body, str(exc), hashlib.sha256(body).hexdigest())
    if delivery.layout == "unknown":
        return _unreadable_body(account_id, body, delivery.problem or "", delivery.identity)
    rows: list[NewEvent] = []
    labels: list[str] = []
    for event in delivery.events:
        stored = json.dumps(event.raw, ensure_ascii=True, separators=(",", ":"))
        status = EventStatus.PENDING if event.recognised else EventStatus.UNRECOGNISED
        key = _unisender_key(account_id, event.identity())
        rows.append(NewEvent(account_id, EventSource.UNISENDER, key, stored, status, event.problem))
        labels.append(event.name if event.name in HOOK_EVENT_NAMES else "unknown")
    unrecognised = sum(1 for row in rows if row.status == EventStatus.UNRECOGNISED)
    if unrecognised or not rows:
        log.warning(
            "unisender_hook.unrecognised_events",
            account_id=account_id,
            layout=delivery.layout,
            events=len(rows),
            unrecognised=unrecognised,
        )
    return rows, labels


def _unreadable_body(
    account_id: int, body: bytes, problem: str, identity: str
) -> tuple[list[NewEvent], list[str]]:
    log.warning("unisender_hook.unreadable", account_id=account_id, problem=problem, bytes=len(body))
    # PostgreSQL text cannot hold NUL; the rest of the body is kept as sent.
    text = body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    key = _unisender_key(account_id, identity)
    return [NewEvent(account_id, EventSource.UNISENDER, key, text, EventStatus.UNRECOGNISED, problem)], [
        "unknown"
    ]
