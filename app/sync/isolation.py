"""Which failures are one item's fault, and how to report them without leaking what was being written.

Webhook events and full-sync pages are applied many at once. When such a batch fails, the mirror applies its
items again in smaller units to tell the bad item apart, so one bad event or contact never blocks the rest of
the account. That only makes sense for failures the data may have caused; failures of the account or of the
infrastructure fail every item alike, and stay the job's to retry as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.accounts.errors import AccountNotReady
from app.connectors.errors import AuthError, ForbiddenError, TransientError

# SQLSTATE classes of failures that are not the data's: connection (08), transaction rollback such as a
# deadlock or a serialization failure (40), insufficient resources (53), operator intervention (57).
_NOT_THE_DATA = ("08", "40", "53", "57")
MAX_REASON = 300


def isolatable(exc: BaseException) -> bool:
    """True when ``exc`` may be the fault of the items being applied (a value the database refuses, a bug
    one contact's data runs into, a Kommo answer we cannot read): applying them one by one finds the culprit.

    False for cancellation and exit, an unreachable or refusing Kommo (transient errors, revoked or blocked
    credentials), an account that is not connected, and PostgreSQL being unreachable or rolling a
    transaction back for concurrency reasons.
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, TransientError | AuthError | ForbiddenError | AccountNotReady):
        return False
    if isinstance(exc, PoolTimeout | ConnectionError | OSError):
        return False
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return False
        return not _sqlstate(exc).startswith(_NOT_THE_DATA)
    return True


def _sqlstate(exc: DBAPIError) -> str:
    for candidate in (exc.orig, getattr(exc.orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if state:
            return str(state)
    return ""


def describe(exc: BaseException) -> str:
    """A short reason for operators: the error's class and message. For database errors the driver's own
    message only, never the statement or its parameters (those carry contact names and addresses)."""
    if isinstance(exc, DBAPIError):
        cause = getattr(exc.orig, "__cause__", None) or exc.orig
        state = _sqlstate(exc)
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        # SQLAlchemy's asyncpg adapter prefixes the driver's class: "<class 'asyncpg…Error'>: message".
        message = first_line.split(">: ", 1)[-1]
        text = f"{type(cause).__name__}" + (f" [{state}]" if state else "") + f": {message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_REASON]


class ApplyFailed(Exception):
    """Applying items failed for a reason they may have caused; nothing of it was committed."""

    def __init__(self, reason: str, ids: Sequence[int] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ids = list(ids)


@contextmanager
def isolating(ids: Sequence[int] = ()) -> Iterator[None]:
    """Raise what fails inside as ``ApplyFailed`` (with ``ids``, the items being applied) when the items may
    have caused it, so the caller applies them in smaller units; anything else goes through unchanged."""
    try:
        yield
    except Exception as exc:
        if not isolatable(exc):
            raise
        raise ApplyFailed(describe(exc), ids) from exc


async def in_halves(
    ids: Sequence[int],
    *,
    group: Callable[[list[int]], Awaitable[object]],
    alone: Callable[[int], Awaitable[bool]],
    set_aside: set[int],
    deadline: float,
) -> bool:
    """Apply items that failed together in halves (``group``: one transaction, raising ``ApplyFailed``), down
    to single ones (``alone``: False when it failed, and it is then set aside for this job); False when the
    deadline (``time.monotonic()``) stopped it, the rest left pending for a continuation."""
    groups: list[list[int]] = [list(ids[: len(ids) // 2]), list(ids[len(ids) // 2 :])]
    while groups:
        if time.monotonic() >= deadline:
            return False
        part = groups.pop(0)
        if not part:
            continue
        if len(part) == 1:
            if not await alone(part[0]):
                set_aside.add(part[0])
            continue
        try:
            await group(part)
        except ApplyFailed:
            groups[:0] = [part[: len(part) // 2], part[len(part) // 2 :]]
    return True
