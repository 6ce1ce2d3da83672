"""What a push's outcome does to the outbox rows it carried: pure decisions, no I/O.

A push either reaches the email platform, which then answers per row (accepted, or rejected with a reason),
or fails as a whole, for one of four reasons:

- the account cannot push now (not connected, disabled): the rows wait a minute, their attempts untouched;
- a transient failure (timeout, 5xx, rate limit): every row's attempt counts, and the rows that had failed
  equally often retry together after one backoff draw for their count (one draw per row would split them
  into many small calls; one for the whole batch, by its most-failed row, kept a fresh live change waiting
  minutes because it shared a call with a row that had failed for a while), no sooner than the platform
  asked; a row is ``dead`` after ``MAX_ATTEMPTS``;
- the platform refused our credentials: the rows wait five minutes, their attempts untouched (the operator
  must fix the key; nothing about the rows is wrong);
- the platform refused the request itself (a client bug, not the data's): each row backs off on its own and
  is ``dead`` after ``MAX_REFUSED_ATTEMPTS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from app.accounts.errors import AccountNotReady
from app.connectors.base import RowOutcome, RowResult
from app.connectors.errors import AuthError, ConnectorError, ForbiddenError, RateLimitedError, TransientError
from app.db.states import OutboxStatus
from app.retry import backoff
from app.sync.outbox_repo import DueRow, RowChange

MAX_ATTEMPTS = 15  # transient failures of a row; then it is "dead" and shown to operators
MAX_REFUSED_ATTEMPTS = 3  # refused requests of a row; then it is "dead"
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
NOT_READY_WAIT = 60.0  # the sweeper checks the account again
CREDENTIALS_WAIT = 300.0
MAX_ERROR = 500
MAX_CODE = 64


class Failure(StrEnum):
    NOT_READY = "not_ready"
    TRANSIENT = "transient"
    CREDENTIALS_REFUSED = "credentials_refused"
    REQUEST_REFUSED = "request_refused"


@dataclass(frozen=True, slots=True)
class PushFailure:
    """Why a whole push failed."""

    failure: Failure
    error: str  # what the rows (and, for refused credentials, the account) record as the last error
    code: str | None  # the platform's (or the account's) error code
    kind: str  # the exception's class name
    retry_after: float | None = None  # the delay the platform asked for
    throttled: bool = False  # a rate-limit answer


def push_failure(exc: AccountNotReady | ConnectorError) -> PushFailure:
    """Classify what a push raised."""
    kind = type(exc).__name__
    if isinstance(exc, AccountNotReady):
        return PushFailure(Failure.NOT_READY, exc.message, exc.error_code, kind)
    if isinstance(exc, TransientError):
        error = f"{kind}: {exc.message}"[:MAX_ERROR]
        throttled = isinstance(exc, RateLimitedError)
        return PushFailure(Failure.TRANSIENT, error, exc.code, kind, exc.retry_after, throttled)
    if isinstance(exc, AuthError | ForbiddenError):
        return PushFailure(Failure.CREDENTIALS_REFUSED, f"{exc.code or kind}: {exc.message}", exc.code, kind)
    return PushFailure(Failure.REQUEST_REFUSED, f"{kind}: {exc.message}"[:MAX_ERROR], exc.code, kind)


def failed_rows(
    rows: Sequence[DueRow], failure: PushFailure, now: datetime
) -> tuple[list[RowChange], float | None]:
    """The rows' new state after ``failure``, and the batch's retry delay (transient failures only)."""
    match failure.failure:
        case Failure.NOT_READY | Failure.CREDENTIALS_REFUSED:
            wait = NOT_READY_WAIT if failure.failure is Failure.NOT_READY else CREDENTIALS_WAIT
            at = now + timedelta(seconds=wait)
            changes = [_change(row, row.attempts, at, failure.error) for row in rows]
            return changes, None
        case Failure.TRANSIENT:
            draws: dict[int, float] = {}
            changes = []
            for row in rows:
                attempts = row.attempts + 1
                if attempts not in draws:
                    draws[attempts] = backoff(
                        attempts, failure.retry_after, base=BACKOFF_BASE, cap=BACKOFF_CAP
                    )
                at = now + timedelta(seconds=draws[attempts])
                changes.append(_change(row, attempts, at, failure.error, MAX_ATTEMPTS))
            return changes, min(draws.values())
        case Failure.REQUEST_REFUSED:
            changes = []
            for row in rows:
                delay = backoff(row.attempts + 1, base=BACKOFF_BASE, cap=BACKOFF_CAP)
                at = now + timedelta(seconds=delay)
                changes.append(_change(row, row.attempts + 1, at, failure.error, MAX_REFUSED_ATTEMPTS))
            return changes, None


def rejected_row(row: DueRow, result: RowResult, now: datetime) -> RowChange | None:
    """A row the platform answered: None when it accepted it (``outbox_repo.mark_pushed``), else the row
    rejected with the platform's reason (not retried: resending the same payload cannot fix it)."""
    if result.outcome is RowOutcome.OK:
        return None
    return RowChange(
        id=row.id,
        status=OutboxStatus.REJECTED,
        attempts=row.attempts,
        next_attempt_at=now,
        last_error=(result.message or "rejected by the email platform")[:MAX_ERROR],
        reject_code=(result.code or "rejected")[:MAX_CODE],
    )


def _change(row: DueRow, attempts: int, at: datetime, error: str, cap: int | None = None) -> RowChange:
    dead = cap is not None and attempts >= cap
    return RowChange(row.id, OutboxStatus.DEAD if dead else OutboxStatus.PENDING, attempts, at, error)
