"""SQL of ``outbox``: the desired state of each address in the email platform, one row per (account, address),
and what the platform last accepted for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Select,
    String,
    Table,
    bindparam,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Outbox
from app.db.sql import Columns, chunks, execute_many, insert_unnest, json_dumps, lateral, unnest_insert
from app.db.states import OutboxStatus
from app.sync.held import held_state
from app.sync.mapping import OUTCOME_UNKNOWN

# The statuses an operator watches (the account views count them).
WATCHED: tuple[OutboxStatus, ...] = (OutboxStatus.PENDING, OutboxStatus.REJECTED, OutboxStatus.DEAD)


@dataclass(frozen=True, slots=True)
class NewRow:
    """A desire for an address that has no outbox row yet (stored pending, due now)."""

    email: str
    payload: dict[str, Any]
    payload_hash: str


@dataclass(frozen=True, slots=True)
class DueRow:
    """The columns of a due outbox row a push needs (plain values: no ORM objects to track and flush)."""

    id: int
    email: str
    payload: dict[str, Any]
    payload_hash: str
    attempts: int
    updated_at: datetime
    bulk: bool = False  # queued by bulk work (a full sync, a re-derivation), not by a live change


@dataclass(frozen=True, slots=True)
class RowChange:
    """A row's outcome columns after a push attempt (written as they are: unchanged ones carry the old value)."""

    id: int
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    reject_code: str | None = None


_COLUMNS: Columns = (
    ("account_id", "BIGINT"),
    ("email", "TEXT"),
    ("payload", "JSON"),
    ("payload_hash", "TEXT"),
    ("status", "TEXT"),
    ("bulk", "BOOLEAN"),
    ("attempts", "INTEGER"),
    ("next_attempt_at", "TIMESTAMPTZ"),
    ("created_at", "TIMESTAMPTZ"),
    ("updated_at", "TIMESTAMPTZ"),
)
_ADD = unnest_insert("outbox", _COLUMNS, "ON CONFLICT (account_id, email) DO NOTHING")
_LOCK = lateral(
    "CAST(:keys AS TEXT[])",
    "email",
    "SELECT id, email, status, payload_hash, pushed_hash, pushed_payload, platform_values, pushed_at FROM outbox"
    " WHERE account_id = :account_id AND email = q.email",
    lock=True,
)
_CHANGE_KEYS = ("status", "attempts", "next_attempt_at", "last_error", "reject_code")


@dataclass(frozen=True, slots=True)
class HeldRow:
    """What deciding an address's next desire needs of its outbox row (plain values)."""

    id: int
    status: OutboxStatus
    payload_hash: str
    pushed_hash: str | None
    pushed_payload: dict[str, Any] | None
    platform_values: dict[str, Any] | None = None
    pushed_at: int = 0  # when the platform accepted that push (epoch seconds; 0: never)


@dataclass(frozen=True, slots=True)
class Requeue:
    """An existing row's new desire."""

    id: int
    payload: dict[str, Any]
    payload_hash: str


async def lock_outbox(session: AsyncSession, account_id: int, emails: Sequence[str]) -> dict[str, HeldRow]:
    """The outbox rows of these addresses, locked: a flush holding one finishes first, so what we read is current."""
    out: dict[str, HeldRow] = {}
    for chunk in chunks(sorted(set(emails))):
        stmt = (
            text(_LOCK)
            .bindparams(account_id=account_id, keys=list(chunk))
            .columns(
                id=BigInteger,
                email=String,
                status=String,
                payload_hash=String,
                pushed_hash=String,
                pushed_payload=JSON,
                platform_values=JSON,
                pushed_at=DateTime(timezone=True),
            )
        )
        for row in (await session.execute(stmt)).all():
            out[row.email] = HeldRow(
                int(row.id),
                OutboxStatus(row.status),
                row.payload_hash,
                row.pushed_hash,
                row.pushed_payload,
                row.platform_values,
                int(row.pushed_at.timestamp()) if row.pushed_at else 0,
            )
    return out


# One statement per chunk of rows, their new values as arrays (as the inserts of app.db.sql): a spec change's
# walk requeues tens of thousands of rows, and an executemany costs far more per row in parameter handling.
_REQUEUE = (
    "UPDATE outbox o SET payload = CAST(u.payload AS JSON), payload_hash = u.payload_hash,"
    " status = :status, attempts = 0, next_attempt_at = :now, last_error = NULL, reject_code = NULL,"
    " bulk = :bulk, updated_at = :now"
    " FROM unnest(CAST(:ids AS BIGINT[]), CAST(:payloads AS TEXT[]), CAST(:hashes AS TEXT[]))"
    " AS u(id, payload, payload_hash) WHERE o.id = u.id"
)
_SETTLE = (
    "UPDATE outbox o SET payload = CAST(u.payload AS JSON), payload_hash = u.payload_hash,"
    " status = :status, last_error = NULL, updated_at = :now"
    " FROM unnest(CAST(:ids AS BIGINT[]), CAST(:payloads AS TEXT[]), CAST(:hashes AS TEXT[]))"
    " AS u(id, payload, payload_hash) WHERE o.id = u.id"
)


async def _update_rows(session: AsyncSession, sql: str, rows: Sequence[Requeue], **values: Any) -> None:
    for chunk in chunks(list(rows)):
        params = {
            "ids": [r.id for r in chunk],
            "payloads": [json_dumps(r.payload) for r in chunk],
            "hashes": [r.payload_hash for r in chunk],
            **values,
        }
        await session.execute(text(sql), params)


async def requeue(session: AsyncSession, rows: Sequence[Requeue], now: datetime, *, bulk: bool) -> None:
    """Make each row pending with its new desire, due now, its attempts and last outcome forgotten."""
    await _update_rows(session, _REQUEUE, rows, status=OutboxStatus.PENDING.value, now=now, bulk=bulk)


async def settle(session: AsyncSession, rows: Sequence[Requeue], now: datetime) -> None:
    """Pending rows whose desire the platform already holds: done, with that desire."""
    await _update_rows(session, _SETTLE, rows, status=OutboxStatus.DONE.value, now=now)


async def add_outbox(
    session: AsyncSession, account_id: int, rows: Sequence[NewRow], *, bulk: bool = False
) -> None:
    now = utcnow()
    constants = {
        "account_id": account_id,
        "status": OutboxStatus.PENDING.value,
        "bulk": bulk,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    await insert_unnest(session, _ADD, _COLUMNS, rows, constants)


async def cancel_outbox(session: AsyncSession, account_id: int, emails: Sequence[str], reason: str) -> None:
    """Drop pending desires that are no longer wanted (e.g. the address unsubscribed)."""
    for chunk in chunks(list(emails)):
        await session.execute(
            update(Outbox)
            .where(
                Outbox.account_id == account_id,
                Outbox.email.in_(chunk),
                Outbox.status == OutboxStatus.PENDING,
            )
            .values(status=OutboxStatus.CANCELLED, last_error=reason, updated_at=utcnow())
        )


def due_rows(account_id: int, bulk: bool, limit: int) -> Select[Any]:
    """The account's due pending rows of one kind (live or bulk), oldest first, locked (others skipped)."""
    return (
        select(
            Outbox.id,
            Outbox.email,
            Outbox.payload,
            Outbox.payload_hash,
            Outbox.attempts,
            Outbox.updated_at,
            Outbox.bulk,
        )
        .where(
            Outbox.account_id == account_id,
            # The partial index on (account_id, bulk, id) of pending rows; without it the claim walked every
            # pushed row in id order. The status is written into the statement (a bound value would leave
            # the driver's reused generic plan unable to tell that the index covers it), and the flag
            # compared with "=", which the index serves (IS it does not; the column is never null).
            Outbox.status == literal(OutboxStatus.PENDING.value, literal_execute=True),
            Outbox.next_attempt_at <= utcnow(),
            Outbox.bulk == bulk,
        )
        .order_by(Outbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


async def claim_due(session: AsyncSession, account_id: int, limit: int) -> list[DueRow]:
    """Due pending rows, live changes first (then bulk work's), oldest first within each, locked until the
    transaction ends (rows another flusher holds are skipped)."""
    rows: list[DueRow] = []
    for bulk in (False, True):
        stmt = due_rows(account_id, bulk, limit - len(rows))
        rows += [DueRow(*row) for row in (await session.execute(stmt)).all()]
        if len(rows) >= limit:
            break
    return rows


async def mark_pushed(session: AsyncSession, ids: Sequence[int], at: datetime) -> None:
    """The email platform accepted these rows as queued: what it holds is now their payload (a deletion also
    ends what it held of the fields it owns)."""
    table = cast(Table, Outbox.__table__)
    for chunk in chunks(list(ids)):
        await session.execute(
            update(table)
            .where(table.c.id.in_(chunk))
            .values(
                status=OutboxStatus.DONE,
                bulk=False,
                pushed_hash=table.c.payload_hash,
                pushed_payload=table.c.payload,
                platform_values=_AFTER_PUSH,
                pushed_at=at,
                last_error=None,
                reject_code=None,
                updated_at=at,
            )
        )


_AFTER_PUSH = literal_column(
    "CASE WHEN (payload::jsonb ->> 'delete') = 'true' THEN NULL ELSE platform_values END", JSON
)
_SET_PLATFORM_VALUES = (
    "UPDATE outbox o SET platform_values = CAST(u.platform_values AS JSON)"
    " FROM unnest(CAST(:ids AS BIGINT[]), CAST(:platform_values AS TEXT[])) AS u(id, platform_values)"
    " WHERE o.id = u.id"
)


async def set_platform_values(
    session: AsyncSession, rows: Sequence[tuple[int, dict[str, Any] | None]]
) -> None:
    """Write ``platform_values`` of these rows (id, value; None clears it)."""
    for chunk in chunks(list(rows)):
        params = {
            "ids": [row_id for row_id, _ in chunk],
            "platform_values": [None if v is None else json_dumps(v) for _, v in chunk],
        }
        await session.execute(text(_SET_PLATFORM_VALUES), params)


async def update_outbox_rows(session: AsyncSession, changes: Sequence[RowChange]) -> None:
    """Write each row's outcome columns."""
    if not changes:
        return
    table = cast(Table, Outbox.__table__)  # Core, not the ORM's bulk-update-by-primary-key mode
    stmt = (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({key: bindparam(f"new_{key}") for key in _CHANGE_KEYS} | {"updated_at": utcnow()})
    )
    rows = [
        {"row_id": change.id, **{f"new_{key}": getattr(change, key) for key in _CHANGE_KEYS}}
        for change in changes
    ]
    await execute_many(session, stmt, rows)


async def mark_outcome_unknown(session: AsyncSession, ids: Sequence[int]) -> None:
    """The rows' last push may or may not have been applied: none is held as pushed until one is accepted
    (``mapping.already_held``), so a desire equal to the state before it is pushed again, not settled."""
    if ids:
        await session.execute(
            update(Outbox).where(Outbox.id.in_(list(ids))).values(pushed_hash=OUTCOME_UNKNOWN),
            execution_options={"synchronize_session": False},
        )


async def accounts_with_due_outbox(session: AsyncSession) -> list[int]:
    stmt = (
        select(Outbox.account_id)
        .where(Outbox.status == OutboxStatus.PENDING, Outbox.next_attempt_at <= utcnow())
        .group_by(Outbox.account_id)
    )
    return [int(x) for x in (await session.execute(stmt)).scalars()]


async def outbox_counts(
    session: AsyncSession,
    account_ids: Sequence[int] | None = None,
    *,
    statuses: Sequence[OutboxStatus] = WATCHED,
) -> dict[int, dict[str, int]]:
    """Per account (every account when ``account_ids`` is None), its rows by status, for ``statuses`` only."""
    if account_ids is not None and not account_ids:
        return {}
    stmt = (
        select(Outbox.account_id, Outbox.status, func.count())
        .where(Outbox.status.in_(list(statuses)))
        .group_by(Outbox.account_id, Outbox.status)
    )
    if account_ids is not None:
        stmt = stmt.where(Outbox.account_id.in_(account_ids))
    counts: dict[int, dict[str, int]] = {}
    for account_id, status, n in (await session.execute(stmt)).all():
        counts.setdefault(int(account_id), {})[str(status)] = int(n)
    return counts


async def pushed_state(
    session: AsyncSession, account_id: int, emails: Sequence[str]
) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """Per address with an outbox row, what the platform last accepted: (hash, payload), the payload with what
    the platform holds of the fields it owns (``app.sync.held.held_state``)."""
    out: dict[str, tuple[str | None, dict[str, Any] | None]] = {}
    for chunk in chunks(list(emails)):
        stmt = select(Outbox.email, Outbox.pushed_hash, Outbox.pushed_payload, Outbox.platform_values).where(
            Outbox.account_id == account_id, Outbox.email.in_(chunk)
        )
        for email, h, payload, values in (await session.execute(stmt)).all():
            out[str(email)] = (h, held_state(payload, values))
    return out
