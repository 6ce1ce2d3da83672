"""Retry timing for the whole service: exponential backoff with jitter, and the delay a server asks for.

Retries belong to the worker (jobs, outbox rows, reconnects); connector clients only report what the server
said (``parse_retry_after``). Every backoff here is ``backoff``: the callers differ in base, cap and jitter
only, so their curves can be compared at a glance.
"""

from __future__ import annotations

import email.utils
import math
import random
import time

# A bogus or hostile Retry-After must not park a credential or a row for days.
MAX_RETRY_AFTER = 3600.0
_MAX_EXPONENT = 64  # 2**64 × any base is far beyond every cap; keeps the float arithmetic finite


def backoff(
    attempt: int, retry_after: float | None = None, *, base: float, cap: float, jitter: float = 1.0
) -> float:
    """Seconds to wait before retry ``attempt``: the ceiling ``min(cap, base·2^attempt)``, of which the top
    ``jitter`` share is drawn at random (1, the default: "full jitter", uniform in [0, ceiling], so clients
    that failed together do not retry in lockstep; 0.5: uniform in [ceiling/2, ceiling]; 0: the ceiling).
    Never below ``retry_after``, the delay the server asked for."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 0), _MAX_EXPONENT))
    delay = random.uniform(ceiling * (1.0 - jitter), ceiling) if jitter else ceiling
    return max(delay, retry_after or 0.0)


def parse_retry_after(value: object) -> float | None:
    """Seconds from a ``Retry-After`` value: a number (a header string, or a JSON number in a body) or an
    HTTP-date (RFC 9110), bounded by ``MAX_RETRY_AFTER``. None when absent, negative or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            return _seconds_until(value)
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def _seconds_until(http_date: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)
