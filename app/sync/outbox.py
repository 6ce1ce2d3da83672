"""Pushing the outbox to the email platform: claim due rows, push them (≤ 500 per call), record the
per-row outcomes, or what a failed push means for the rows (``push_policy``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.accounts.errors import AccountNotReady
from app.connectors.base import ImportRow, RowResult
from app.connectors.errors import ConnectorError
from app.connectors.ratelimit import bulk_work
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import flush_lock
from app.db.models import EspAccount
from app.sync import outbox_repo, providers
from app.sync.outbox_repo import DueRow
from app.sync.push_policy import Failure, PushFailure, failed_rows, push_failure, rejected_row

log = structlog.get_logger(__name__)

MAX_BATCHES = 40  # per job; a follow-up job continues
BATCH_ROWS = 500  # the most rows one import call takes (Unisender's importContacts limit)
PUSH_LANES = 3  # import calls of one account in flight at once during a backlog


@dataclass
class FlushResult:
    calls: int = 0
    pushed: int = 0
    rejected: int = 0
    retry_in: float | None = None  # set when rows wait for a retry
    busy: bool = False
    blocked: str | None = None  # why nothing can be pushed now (not connected, bad key)
    more: bool = False  # stopped at MAX_BATCHES after full batches: rows are probably still due


async def flush_account(pc: ProcessContext, account_id: int, *, drain: bool = True) -> FlushResult:
    """Push due outbox rows of one account until none is left (bounded).

    A backlog (a first batch that was full) is pushed by ``PUSH_LANES`` lanes at once, each a loop of
    claim → import call → record in one transaction: one call at a time would leave the platform's rate
    unused while each answer is awaited (an import of 500 rows takes a while), so a large push would take
    several times its rate floor. Each lane holds its own lock (one pusher per lane and account, whatever
    the number of jobs and processes) and claims its rows with SKIP LOCKED, so lanes never share a row; the
    client's rate budget bounds them together.

    ``drain=False`` (flush jobs of live changes) stops after a batch that was not full: the rows that became
    due meanwhile have a job of their own for the next coalescing window, and pushing them now would spend
    an import call on a handful of rows.

    Rows are read as plain values and written back with a few set-based UPDATEs: a push of 500 rows must cost
    far less than the 1/20 s the platform's rate limit allows per call, and ORM objects (500 loaded, 500
    flushed one by one) did not.
    """
    flush = _Flush(drain)
    first = await flush.batch(pc, account_id, 0)
    if first == BATCH_ROWS and not flush.stopped:
        await asyncio.gather(*(flush.lane(pc, account_id, lane) for lane in range(PUSH_LANES)))
    elif first is None:
        flush.result.busy = True
    flush.result.more = flush.batches >= MAX_BATCHES and not flush.stopped
    return flush.result


class _Flush:
    """One flush of an account: its lanes share the result, the batch count and the reason to stop."""

    def __init__(self, drain: bool) -> None:
        self.drain = drain
        self.result = FlushResult()
        self.batches = 0
        self.stopped = False  # nothing left, a failure, or (live flushes) a batch that was not full

    async def lane(self, pc: ProcessContext, account_id: int, lane: int) -> None:
        while not self.stopped and self.batches < MAX_BATCHES:
            taken = await self.batch(pc, account_id, lane)
            if taken is None:
                return  # another flusher holds this lane
            if taken < BATCH_ROWS:
                return  # the due rows ran out for this lane

    async def batch(self, pc: ProcessContext, account_id: int, lane: int) -> int | None:
        """One claim → import → record; the rows it took (None: the lane is held elsewhere)."""
        self.batches += 1
        async with pc.db.session_scope() as session:
            if not await flush_lock(session, account_id, lane):
                return None
            rows = await outbox_repo.claim_due(session, account_id, BATCH_ROWS)
            if not rows:
                self.stopped = True
                return 0
            esp: EspAccount | None = None
            started = time.monotonic()
            try:
                client, esp = await providers.esp_client(session, pc, account_id)
                # A batch with any live change in it is live work for the platform's budget.
                with bulk_work(all(row.bulk for row in rows)):
                    answers = await client.import_contacts(_import_rows(rows, esp.list_id))
            except (AccountNotReady, ConnectorError) as exc:
                self.stopped = True
                await _record_failure(session, account_id, rows, push_failure(exc), esp, self.result)
                return len(rows)
            await _record_answers(session, account_id, rows, answers, self.result, started)
        if not self.drain and len(rows) < BATCH_ROWS:
            self.stopped = True
        return len(rows)


def _import_rows(rows: Sequence[DueRow], list_id: int | None) -> list[ImportRow]:
    return [import_row(row.email, row.payload, list_id) for row in rows]


def import_row(email: str, payload: Mapping[str, Any], base_list_id: int | None) -> ImportRow:
    """The import row of an outbox payload (``app.sync.mapping.desired``)."""
    if payload.get("delete"):
        return ImportRow(email=email, delete=True)
    if "fields" not in payload:
        # Queued before the sync spec existed ({"delete", "name"}): the default spec's row.
        lists = (base_list_id,) if base_list_id is not None else ()
        return ImportRow(email=email, fields=(("Name", str(payload.get("name") or "")),), list_ids=lists)
    fields = payload.get("fields") or {}
    return ImportRow(
        email=email,
        fields=tuple(sorted((str(k), str(v)) for k, v in fields.items())),
        list_ids=tuple(int(i) for i in payload.get("lists") or ()),
        excluded_list_ids=tuple(int(i) for i in payload.get("excluded") or ()),
        unsubscribed_list_ids=tuple(int(i) for i in payload.get("unsubscribed") or ()),
        phone=str(payload.get("phone") or ""),
    )


async def _record_answers(
    session: AsyncSession,
    account_id: int,
    rows: Sequence[DueRow],
    answers: Sequence[RowResult],
    result: FlushResult,
    started: float,
) -> None:
    """The platform answered every row: accepted rows are pushed, the others rejected with its reason."""
    result.calls += 1
    metrics.PROVIDER_REQUESTS.labels(providers.ESP_NAME, providers.ESP_IMPORT_CALL, "ok").inc()
    now = utcnow()
    accepted: list[int] = []
    refused: list[outbox_repo.RowChange] = []
    for row, answer in zip(rows, answers, strict=True):
        change = rejected_row(row, answer, now)
        if change is None:
            accepted.append(row.id)
            metrics.EVENT_LAG.observe(max(0.0, (now - row.updated_at).total_seconds()))
        else:
            refused.append(change)
    await outbox_repo.mark_pushed(session, accepted, now)
    await outbox_repo.update_outbox_rows(session, refused)
    result.pushed += len(accepted)
    result.rejected += len(refused)
    log.info(
        "outbox.pushed",
        account_id=account_id,
        rows=len(rows),
        rejected=len(refused),
        duration_s=round(time.monotonic() - started, 3),
    )


async def _record_failure(
    session: AsyncSession,
    account_id: int,
    rows: Sequence[DueRow],
    failure: PushFailure,
    esp: EspAccount | None,
    result: FlushResult,
) -> None:
    """The push failed as a whole: the rows' new state from the policy, and what operators see of it."""
    now = utcnow()
    changes, retry_in = failed_rows(rows, failure, now)
    await outbox_repo.update_outbox_rows(session, changes)
    if failure.failure is Failure.TRANSIENT and not failure.throttled:
        # A timeout, a broken connection or a 5xx: the import may have been applied all the same.
        await outbox_repo.mark_outcome_unknown(session, [row.id for row in rows])
    match failure.failure:
        case Failure.NOT_READY:
            result.blocked = failure.code  # wait for the account to be connected; the sweeper looks again
        case Failure.TRANSIENT:
            metrics.PROVIDER_REQUESTS.labels(providers.ESP_NAME, providers.ESP_IMPORT_CALL, "retry").inc()
            if failure.throttled:
                metrics.PROVIDER_THROTTLED.labels(providers.ESP_NAME).inc()
            result.retry_in = retry_in
            log.warning(
                "outbox.push_retry",
                account_id=account_id,
                rows=len(rows),
                retry_in=round(retry_in or 0.0, 2),
                error=failure.code or failure.kind,
            )
        case Failure.CREDENTIALS_REFUSED:
            if esp is not None:
                esp.last_error, esp.last_error_at = failure.error, now
            result.blocked = failure.code or f"{providers.ESP_NAME}_auth"
            log.error("outbox.credentials_refused", account_id=account_id, error=failure.code)
        case Failure.REQUEST_REFUSED:
            log.error("outbox.push_failed", account_id=account_id, rows=len(rows), error=failure.code)
