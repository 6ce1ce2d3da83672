"""Pushing the outbox to the email platform: ≤ 500 rows per call, per-row outcomes, backoff on failure."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from app import metrics
from app.accounts.errors import AccountNotReady
from app.accounts.unisender import unisender_client_for
from app.connectors.base import ImportRow, RowOutcome
from app.connectors.errors import AuthError, ConnectorError, ForbiddenError, TransientError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import xact_lock
from app.sync import repository as repo

log = structlog.get_logger(__name__)

MAX_BATCHES = 40  # per job; a follow-up job continues
MAX_ATTEMPTS = 15  # then the row is "dead" and shown to operators
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
BATCH_ROWS = 500  # Unisender's importContacts limit per call


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Full jitter (Brooker): uniform in [0, min(cap, base·2^attempt)], never below the server's retry_after."""
    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
    return max(delay, retry_after or 0.0)


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
    """Push due outbox rows of one account until none is left (bounded); one flusher per account at a time.

    ``drain=False`` (flush jobs of live changes) stops after a batch that was not full: the rows that became
    due meanwhile have a job of their own for the next coalescing window, and pushing them now would spend
    an importContacts call on a handful of rows.

    Rows are read as plain values and written back with a few set-based UPDATEs: a push of 500 rows must cost
    far less than the 1/20 s Unisender's limit allows per call, and ORM objects (500 loaded, 500 flushed
    one by one) did not.
    """
    result = FlushResult()
    for _ in range(MAX_BATCHES):
        async with pc.db.session_scope() as session:
            if not await xact_lock(session, f"flush:{account_id}", wait=False):
                result.busy = True
                return result
            rows = await repo.claim_due(session, account_id, BATCH_ROWS)
            if not rows:
                return result
            try:
                client, esp = await unisender_client_for(session, pc, account_id)
            except AccountNotReady as exc:
                result.blocked = exc.error_code
                # Wait for the account to be connected; checked again by the sweeper.
                await repo.update_outbox_rows(
                    session,
                    [
                        _change(row, next_attempt_at=utcnow() + timedelta(seconds=60), last_error=exc.message)
                        for row in rows
                    ],
                )
                return result
            list_ids = (esp.list_id,) if esp.list_id is not None else ()
            batch = [
                ImportRow(
                    email=row.email,
                    name=str(row.payload.get("name") or ""),
                    list_ids=() if row.payload.get("delete") else list_ids,
                    delete=bool(row.payload.get("delete")),
                )
                for row in rows
            ]
            started = time.monotonic()
            try:
                outcomes = await client.import_contacts(batch)
            except TransientError as exc:
                metrics.PROVIDER_REQUESTS.labels("unisender", "importContacts", "retry").inc()
                if exc.code and exc.code.startswith("api_call_limit"):
                    metrics.PROVIDER_THROTTLED.labels("unisender").inc()
                # One draw per batch: a maximum over many draws would lose the jitter and retry in lockstep.
                delay = backoff(max(row.attempts + 1 for row in rows), exc.retry_after)
                error = f"{type(exc).__name__}: {exc.message}"[:500]
                at = utcnow() + timedelta(seconds=delay)
                await repo.update_outbox_rows(
                    session,
                    [
                        _change(
                            row,
                            attempts=row.attempts + 1,
                            status="dead" if row.attempts + 1 >= MAX_ATTEMPTS else "pending",
                            next_attempt_at=at,
                            last_error=error,
                        )
                        for row in rows
                    ],
                )
                result.retry_in = delay
                log.warning(
                    "outbox.push_retry",
                    account_id=account_id,
                    rows=len(rows),
                    retry_in=round(delay, 2),
                    error=exc.code or type(exc).__name__,
                )
                return result
            except (AuthError, ForbiddenError) as exc:
                esp.last_error, esp.last_error_at = (
                    f"{exc.code or type(exc).__name__}: {exc.message}",
                    utcnow(),
                )
                at = utcnow() + timedelta(seconds=300)
                await repo.update_outbox_rows(
                    session, [_change(row, next_attempt_at=at, last_error=esp.last_error) for row in rows]
                )
                result.blocked = exc.code or "unisender_auth"
                log.error("outbox.credentials_refused", account_id=account_id, error=exc.code)
                return result
            except ConnectorError as exc:
                # The request itself was refused (should not happen with a correct client): park the rows.
                error = f"{type(exc).__name__}: {exc.message}"[:500]
                await repo.update_outbox_rows(
                    session,
                    [
                        _change(
                            row,
                            attempts=row.attempts + 1,
                            status="dead" if row.attempts + 1 >= 3 else "pending",
                            next_attempt_at=utcnow() + timedelta(seconds=backoff(row.attempts + 1)),
                            last_error=error,
                        )
                        for row in rows
                    ],
                )
                log.error("outbox.push_failed", account_id=account_id, rows=len(rows), error=exc.code)
                return result
            result.calls += 1
            metrics.PROVIDER_REQUESTS.labels("unisender", "importContacts", "ok").inc()
            now = utcnow()
            accepted: list[int] = []
            refused: list[dict[str, Any]] = []
            for row, outcome in zip(rows, outcomes, strict=True):
                if outcome.outcome is RowOutcome.OK:
                    accepted.append(row.id)
                    metrics.EVENT_LAG.observe(max(0.0, (now - row.updated_at).total_seconds()))
                else:
                    refused.append(
                        _change(
                            row,
                            status="rejected",
                            reject_code=(outcome.code or "rejected")[:64],
                            last_error=(outcome.message or "rejected by Unisender")[:500],
                        )
                    )
            await repo.mark_pushed(session, accepted, now)
            await repo.update_outbox_rows(session, refused)
            result.pushed += len(accepted)
            result.rejected += len(refused)
            log.info(
                "outbox.pushed",
                account_id=account_id,
                rows=len(rows),
                rejected=len(refused),
                duration_s=round(time.monotonic() - started, 3),
            )
        if not drain and len(rows) < BATCH_ROWS:
            return result
    result.more = True
    return result


def _change(
    row: repo.DueRow,
    *,
    status: str = "pending",
    attempts: int | None = None,
    next_attempt_at: datetime | None = None,
    last_error: str | None = None,
    reject_code: str | None = None,
) -> dict[str, Any]:
    """A row's new outcome columns for ``repo.update_outbox_rows`` (unchanged ones keep the row's value)."""
    return {
        "id": row.id,
        "status": status,
        "attempts": row.attempts if attempts is None else attempts,
        "next_attempt_at": next_attempt_at if next_attempt_at is not None else utcnow(),
        "last_error": last_error,
        "reject_code": reject_code,
    }
