"""What each outcome of a push does to the outbox rows it carried (``app.sync.push_policy``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.accounts.errors import AccountNotReady
from app.connectors.base import RowOutcome, RowResult
from app.connectors.errors import AuthError, ForbiddenError, RateLimitedError, RequestError, TransientError
from app.db.states import OutboxStatus
from app.sync.outbox_repo import DueRow
from app.sync.push_policy import (
    CREDENTIALS_WAIT,
    MAX_ATTEMPTS,
    MAX_REFUSED_ATTEMPTS,
    NOT_READY_WAIT,
    Failure,
    failed_rows,
    push_failure,
    rejected_row,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _row(id_: int, attempts: int) -> DueRow:
    return DueRow(id_, f"r{id_}@x.io", {"delete": False, "name": ""}, "h", attempts, NOW)


def test_an_account_that_cannot_push_waits_a_minute_without_counting_an_attempt() -> None:
    failure = push_failure(AccountNotReady("Unisender is not connected for account 5."))
    assert failure.failure is Failure.NOT_READY
    changes, retry_in = failed_rows([_row(1, 0), _row(2, 14)], failure, NOW)
    assert retry_in is None
    assert [(c.id, c.status, c.attempts, c.next_attempt_at) for c in changes] == [
        (1, OutboxStatus.PENDING, 0, NOW + timedelta(seconds=NOT_READY_WAIT)),
        (2, OutboxStatus.PENDING, 14, NOW + timedelta(seconds=NOT_READY_WAIT)),
    ]
    assert all(c.last_error == "Unisender is not connected for account 5." for c in changes)


def test_a_transient_failure_counts_an_attempt_and_rows_that_failed_as_often_retry_together() -> None:
    failure = push_failure(TransientError("HTTP 503", code="http_503"))
    assert (failure.failure, failure.throttled) == (Failure.TRANSIENT, False)
    rows = [_row(1, 0), _row(2, MAX_ATTEMPTS - 1), _row(3, 3), _row(4, 0), _row(5, 3)]
    changes, retry_in = failed_rows(rows, failure, NOW)
    assert [(c.status, c.attempts) for c in changes] == [
        (OutboxStatus.PENDING, 1),
        (OutboxStatus.DEAD, MAX_ATTEMPTS),  # its last attempt: dead, shown to operators
        (OutboxStatus.PENDING, 4),
        (OutboxStatus.PENDING, 1),
        (OutboxStatus.PENDING, 4),
    ]
    assert changes[0].last_error == "TransientError: HTTP 503"
    wait = {c.id: (c.next_attempt_at - NOW).total_seconds() for c in changes}
    assert wait[1] == wait[4]  # one draw per count: they go out together again
    assert wait[3] == wait[5]
    # A fresh change is not held back by the row that has failed for a while: its own ceiling (2 s here),
    # not the most-failed row's (minutes).
    assert 0 <= wait[1] <= 2.0
    assert 0 <= wait[3] <= 16.0
    assert retry_in == pytest.approx(min(wait.values()), abs=1e-5)  # the next flush: the earliest of them


def test_a_rate_limit_is_waited_out_at_least_as_long_as_asked() -> None:
    failure = push_failure(RateLimitedError("slow down", code="api_call_limit", retry_after=120.0))
    assert failure.throttled
    for _ in range(20):
        _, retry_in = failed_rows([_row(1, 0)], failure, NOW)
        assert retry_in is not None
        assert retry_in >= 120.0


@pytest.mark.parametrize(
    "error", [AuthError("invalid key", code="invalid_api_key"), ForbiddenError("no money")]
)
def test_refused_credentials_park_the_rows_five_minutes_without_counting_an_attempt(error: Exception) -> None:
    failure = push_failure(error)  # type: ignore[arg-type]
    assert failure.failure is Failure.CREDENTIALS_REFUSED
    changes, retry_in = failed_rows([_row(1, 2)], failure, NOW)
    assert retry_in is None
    [change] = changes
    assert (change.status, change.attempts) == (OutboxStatus.PENDING, 2)
    assert change.next_attempt_at == NOW + timedelta(seconds=CREDENTIALS_WAIT)
    assert change.last_error == failure.error
    assert failure.error in ("invalid_api_key: invalid key", "ForbiddenError: no money")


def test_a_refused_request_backs_each_row_off_and_kills_it_after_three() -> None:
    failure = push_failure(RequestError("invalid_arg", code="invalid_arg"))
    assert failure.failure is Failure.REQUEST_REFUSED
    changes, retry_in = failed_rows([_row(1, 0), _row(2, MAX_REFUSED_ATTEMPTS - 1)], failure, NOW)
    assert retry_in is None
    assert [(c.status, c.attempts) for c in changes] == [
        (OutboxStatus.PENDING, 1),
        (OutboxStatus.DEAD, MAX_REFUSED_ATTEMPTS),
    ]
    assert NOW <= changes[0].next_attempt_at <= NOW + timedelta(seconds=2)  # backoff(1): within 2 s
    assert changes[0].last_error == "RequestError: invalid_arg"


def test_a_row_the_platform_accepts_is_pushed_and_one_it_rejects_keeps_the_reason() -> None:
    row = _row(1, 3)
    assert rejected_row(row, RowResult(0, RowOutcome.OK), NOW) is None
    change = rejected_row(row, RowResult(0, RowOutcome.REJECTED, "role_address", "x" * 900), NOW)
    assert change is not None
    assert (change.status, change.attempts, change.reject_code) == (OutboxStatus.REJECTED, 3, "role_address")
    assert change.last_error == "x" * 500
    bare = rejected_row(row, RowResult(0, RowOutcome.REJECTED), NOW)
    assert bare is not None
    assert bare.reject_code == "rejected"
