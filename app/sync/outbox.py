"""Pushing the outbox to the email platform: ≤ 500 rows per call, per-row outcomes, backoff on failure."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import timedelta

import structlog

from app import metrics
from app.accounts.service import AccountNotReady, unisender_client_for
from app.connectors.base import ImportRow, RowOutcome
from app.connectors.errors import AuthError, ConnectorError, ForbiddenError, TransientError
from app.context import ProcessContext
from app.db import dialect
from app.db.base import utcnow
from app.sync import repository as repo

log = structlog.get_logger(__name__)

MAX_BATCHES = 40  # per job; a follow-up job continues
MAX_ATTEMPTS = 15  # then the row is "dead" and shown to operators
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0


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


async def flush_account(pc: ProcessContext, account_id: int) -> FlushResult:
    """Push due outbox rows of one account until none is left (bounded); one flusher per account at a time."""
    result = FlushResult()
    for _ in range(MAX_BATCHES):
        async with pc.db.session_scope() as session:
            if not await dialect.xact_lock(session, f"flush:{account_id}", wait=False):
                result.busy = True
                return result
            rows = await repo.claim_outbox(session, account_id, 500)
            if not rows:
                return result
            try:
                client, esp = await unisender_client_for(session, pc, account_id)
            except AccountNotReady as exc:
                result.blocked = exc.error_code
                for row in rows:  # wait for the account to be connected; checked again by the sweeper
                    row.next_attempt_at = utcnow() + timedelta(seconds=60)
                    row.last_error = exc.message
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
                for row in rows:
                    row.attempts += 1
                # One draw per batch: a maximum over many draws would lose the jitter and retry in lockstep.
                delay = backoff(max(row.attempts for row in rows), exc.retry_after)
                for row in rows:
                    row.next_attempt_at = utcnow() + timedelta(seconds=delay)
                    row.last_error = f"{type(exc).__name__}: {exc.message}"[:500]
                    if row.attempts >= MAX_ATTEMPTS:
                        row.status = "dead"
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
                for row in rows:
                    row.next_attempt_at = utcnow() + timedelta(seconds=300)
                    row.last_error = esp.last_error
                result.blocked = exc.code or "unisender_auth"
                log.error("outbox.credentials_refused", account_id=account_id, error=exc.code)
                return result
            except ConnectorError as exc:
                # The request itself was refused (should not happen with a correct client): park the rows.
                for row in rows:
                    row.attempts += 1
                    row.status = "dead" if row.attempts >= 3 else "pending"
                    row.next_attempt_at = utcnow() + timedelta(seconds=backoff(row.attempts))
                    row.last_error = f"{type(exc).__name__}: {exc.message}"[:500]
                log.error("outbox.push_failed", account_id=account_id, rows=len(rows), error=exc.code)
                return result
            result.calls += 1
            metrics.PROVIDER_REQUESTS.labels("unisender", "importContacts", "ok").inc()
            now = utcnow()
            for row, outcome in zip(rows, outcomes, strict=True):
                if outcome.outcome is RowOutcome.OK:
                    row.status, row.pushed_hash, row.pushed_at = "done", row.payload_hash, now
                    row.last_error = row.reject_code = None
                    result.pushed += 1
                    metrics.EVENT_LAG.observe(max(0.0, (now - row.updated_at).total_seconds()))
                else:
                    row.status, row.reject_code = "rejected", (outcome.code or "rejected")[:64]
                    row.last_error = (outcome.message or "rejected by Unisender")[:500]
                    result.rejected += 1
            log.info(
                "outbox.pushed",
                account_id=account_id,
                rows=len(rows),
                rejected=sum(1 for o in outcomes if o.outcome is not RowOutcome.OK),
                duration_s=round(time.monotonic() - started, 3),
            )
    return result
