"""app.retry: the one backoff curve and the one Retry-After reader of the service."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest

from app.retry import MAX_RETRY_AFTER, backoff, parse_retry_after


def test_full_jitter_stays_under_the_ceiling_and_above_what_the_server_asked() -> None:
    draws = [backoff(3, base=1.0, cap=300.0) for _ in range(200)]
    assert all(0.0 <= d <= 8.0 for d in draws)
    assert len(set(draws)) > 100  # jittered, not a fixed delay
    assert all(backoff(3, 50.0, base=1.0, cap=300.0) >= 50.0 for _ in range(50))
    assert all(backoff(30, base=1.0, cap=120.0) <= 120.0 for _ in range(50))  # capped


def test_partial_and_no_jitter() -> None:
    assert all(4.0 <= backoff(3, base=1.0, cap=60.0, jitter=0.5) <= 8.0 for _ in range(100))
    assert [backoff(n, base=0.5, cap=10.0, jitter=0.0) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff(10_000, base=1.0, cap=30.0, jitter=0.0) == 30.0  # no float overflow on long outages


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        (300, 300.0),
        (1e9, MAX_RETRY_AFTER),
        ("-1", None),
        ("nan", None),
        ("soon", None),
        (True, None),
        (None, None),
        ([1], None),
    ],
)
def test_parse_retry_after_numbers(value: object, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_dates() -> None:
    ahead = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55.0 <= (parse_retry_after(ahead) or 0.0) <= 61.0
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past) == 0.0
    far = email.utils.format_datetime(datetime.now(UTC) + timedelta(days=3), usegmt=True)
    assert parse_retry_after(far) == MAX_RETRY_AFTER
