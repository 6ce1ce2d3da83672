"""SQL of the mirror: contacts, address ownership, consent, outbox, inbox events, sync runs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.locks import xact_lock
from app.db.models import (
    Contact,
    ContactAddress,
    ContactEmail,
    EspAccount,
    Integration,
    Outbox,
    SyncFailure,
    SyncRun,
    WebhookEvent,
)

CHUNK = 500  # bound IN-lists and executemany batches
_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int = CHUNK) -> Iterable[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _execute_many(session: AsyncSession, stmt: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Run one parameterised statement for many rows (DBAPI executemany).

    The statement carries no values of its own, so SQLAlchemy compiles it once and serves it from its cache;
    asyncpg prepares it once and pipelines the rows. A multi-row ``.values([...])`` instead builds a new
    statement with one bind parameter per cell every call, and compiling those dominated the full sync.
    """
    for chunk in _chunks(rows):
        await session.execute(stmt, list(chunk))


async def account_lock(session: AsyncSession, account_id: int, *, wait: bool = True) -> bool:
    """Serialise the mirror's writes for one account until the transaction ends.

    Recomputing an address's desired state reads every contact that holds it; two transactions doing that
    at once for the same account could each miss the other's change.
    """
    return await xact_lock(session, f"mirror:{account_id}", wait=wait)


# Bulk inserts on PostgreSQL: one array per column, ``INSERT … SELECT … FROM unnest(…)``. One statement and
# one bind parameter per column, whatever the number of rows: less work for SQLAlchemy (no per-row parameter
# processing) and for PostgreSQL (one execution instead of one per row) than executemany (PERFORMANCE.md §1.3).
# Column types: PostgreSQL array types, "JSON" for JSON columns (sent as text and cast).
_Columns = tuple[tuple[str, str], ...]


def _unnest_insert(table: str, columns: _Columns, tail: str) -> str:
    names = ", ".join(name for name, _ in columns)
    arrays = ", ".join(f"CAST(:{name} AS {'TEXT' if kind == 'JSON' else kind}[])" for name, kind in columns)
    values = ", ".join(f"CAST(u.{name} AS JSON)" if kind == "JSON" else f"u.{name}" for name, kind in columns)
    return f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({arrays}) AS u({names}) {tail}"


async def _insert_unnest(
    session: AsyncSession, sql: str, columns: _Columns, rows: Sequence[dict[str, Any]]
) -> None:
    for chunk in _chunks(rows):
        params = {
            name: [json.dumps(row[name]) if kind == "JSON" else row[name] for row in chunk]
            for name, kind in columns
        }
        await session.execute(text(sql), params)


_CONTACT_COLUMNS: _Columns = (
    ("account_id", "BIGINT"),
    ("kommo_id", "BIGINT"),
    ("name", "TEXT"),
    ("emails", "JSON"),
    ("tags", "JSON"),
    ("kommo_updated_at", "BIGINT"),
    ("deleted_at", "TIMESTAMPTZ"),
    ("seen_run_id", "TEXT"),
    ("updated_at", "TIMESTAMPTZ"),
)
_PG_UPSERT_CONTACTS = _unnest_insert(
    "contact",
    _CONTACT_COLUMNS,
    "ON CONFLICT (account_id, kommo_id) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in _CONTACT_COLUMNS[2:]),
)
_ADDRESS_COLUMNS: _Columns = (("account_id", "BIGINT"), ("kommo_id", "BIGINT"), ("email", "TEXT"))
_PG_ADD_ADDRESSES = _unnest_insert("contact_address", _ADDRESS_COLUMNS, "ON CONFLICT DO NOTHING")
_OWNER_COLUMNS: _Columns = (
    ("account_id", "BIGINT"),
    ("email", "TEXT"),
    ("kommo_id", "BIGINT"),
    ("consent", "TEXT"),
    ("updated_at", "TIMESTAMPTZ"),
)
_PG_UPSERT_OWNERS = _unnest_insert(
    "contact_email",
    _OWNER_COLUMNS,
    "ON CONFLICT (account_id, email) DO UPDATE SET kommo_id = EXCLUDED.kommo_id, updated_at = EXCLUDED.updated_at",
)
_OUTBOX_COLUMNS: _Columns = (
    ("account_id", "BIGINT"),
    ("email", "TEXT"),
    ("payload", "JSON"),
    ("payload_hash", "TEXT"),
    ("status", "TEXT"),
    ("attempts", "INTEGER"),
    ("next_attempt_at", "TIMESTAMPTZ"),
    ("created_at", "TIMESTAMPTZ"),
    ("updated_at", "TIMESTAMPTZ"),
)
_PG_ADD_OUTBOX = _unnest_insert("outbox", _OUTBOX_COLUMNS, "ON CONFLICT (account_id, email) DO NOTHING")


# Key lookups on PostgreSQL: one index probe per key, whatever the statistics say.
#
# ``account_id = :a AND key IN (…300 keys…)`` is planned from the table's statistics. While a full sync fills
# fresh (or not yet analysed) tables, or for an account that is new among many, PostgreSQL believes
# ``account_id = :a`` matches a handful of rows, scans the account's rows through the index prefix and
# filters the keys: a cost that grows with every page (measured: 100+ ms per lookup after 10k contacts).
# A LATERAL subquery with equality on every column of an index is one probe per key in any state; its
# ``OFFSET 0`` keeps the planner from flattening it back into a join planned from the same statistics.


def _lateral(keys_sql: str, key: str, inner: str, *, lock: bool = False) -> str:
    """``inner`` run once per element of the array parameter ``keys_sql`` (named ``q.{key}``)."""
    fence = " OFFSET 0" + (" FOR UPDATE" if lock else "")
    return f"SELECT r.* FROM unnest({keys_sql}) AS q({key}) CROSS JOIN LATERAL ({inner}{fence}) AS r"


_PG_CONTACTS_BY_IDS = _lateral(
    "CAST(:keys AS BIGINT[])",
    "kommo_id",
    "SELECT * FROM contact WHERE account_id = :account_id AND kommo_id = q.kommo_id",
)
_PG_ADDRESSES_OF = _lateral(
    "CAST(:keys AS BIGINT[])",
    "kommo_id",
    "SELECT kommo_id, email FROM contact_address WHERE account_id = :account_id AND kommo_id = q.kommo_id",
)
_PG_LIVE_HOLDERS = _lateral(
    "CAST(:keys AS TEXT[])",
    "email",
    "SELECT a.email, c.kommo_id, c.name, c.kommo_updated_at FROM contact_address a"
    " JOIN contact c ON c.account_id = a.account_id AND c.kommo_id = a.kommo_id"
    " WHERE a.account_id = :account_id AND a.email = q.email AND c.deleted_at IS NULL",
)
_PG_CONSENT_ROWS = _lateral(
    "CAST(:keys AS TEXT[])",
    "email",
    "SELECT * FROM contact_email WHERE account_id = :account_id AND email = q.email",
)
# Keys come sorted and the nested loop follows the array, so rows are locked in email order (no deadlock
# between two transactions locking overlapping sets).
_PG_LOCK_OUTBOX = _lateral(
    "CAST(:keys AS TEXT[])",
    "email",
    "SELECT * FROM outbox WHERE account_id = :account_id AND email = q.email",
    lock=True,
)


# --- inbox -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxRow:
    """A webhook event to store; ``status`` is ``pending`` (to process) or ``unrecognised`` (kept as is)."""

    account_id: int
    source: str
    dedupe_key: str
    body: str
    status: str = "pending"
    last_error: str | None = None


async def insert_events(session: AsyncSession, rows: Sequence[InboxRow]) -> set[str]:
    """Store webhook events; returns the dedupe keys stored now (a key stored before is skipped)."""
    unique: dict[str, InboxRow] = {}
    for row in rows:
        unique.setdefault(row.dedupe_key, row)  # the same event twice in one delivery is stored once
    now = utcnow()
    stored: set[str] = set()
    for chunk in _chunks(list(unique.values())):
        stmt = (
            insert(WebhookEvent)
            .values(
                [
                    {
                        "account_id": row.account_id,
                        "source": row.source,
                        "dedupe_key": row.dedupe_key,
                        "body": row.body,
                        "status": row.status,
                        "attempts": 0,
                        "last_error": row.last_error,
                        "received_at": now,
                    }
                    for row in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(WebhookEvent.dedupe_key)
        )
        stored.update(str(key) for key in (await session.execute(stmt)).scalars())
    return stored


async def pending_events(
    session: AsyncSession, account_id: int, source: str, limit: int, *, exclude: Iterable[int] | None = None
) -> list[WebhookEvent]:
    stmt = (
        select(WebhookEvent)
        .where(
            WebhookEvent.account_id == account_id,
            WebhookEvent.source == source,
            WebhookEvent.status == "pending",
        )
        .order_by(WebhookEvent.id)
        .limit(limit)
    )
    if exclude:
        stmt = stmt.where(WebhookEvent.id.not_in(sorted(exclude)))
    return list((await session.execute(stmt)).scalars())


async def pending_events_by_ids(
    session: AsyncSession, account_id: int, ids: Sequence[int]
) -> list[WebhookEvent]:
    stmt = (
        select(WebhookEvent)
        .where(
            WebhookEvent.account_id == account_id,
            WebhookEvent.id.in_(list(ids)),
            WebhookEvent.status == "pending",
        )
        .order_by(WebhookEvent.id)
    )
    return list((await session.execute(stmt)).scalars())


async def count_event_attempt(
    session: AsyncSession, event_id: int, *, undo: bool = False
) -> tuple[int, str | None] | None:
    """Count (or, ``undo``, take back) an attempt of a pending event; returns its attempts and last error,
    None when it is no longer pending. The caller commits this before applying the event."""
    stmt = (
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == "pending")
        .values(attempts=WebhookEvent.attempts + (-1 if undo else 1))
        .returning(WebhookEvent.attempts, WebhookEvent.last_error)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (int(row[0]), row[1])


async def record_event_failure(session: AsyncSession, event_id: int, reason: str, *, final: bool) -> None:
    """Remember why a pending event failed; ``final`` gives up on it (status ``failed``)."""
    values: dict[str, Any] = {"last_error": reason}
    if final:
        values |= {"status": "failed", "handled_at": utcnow()}
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == "pending")
        .values(**values)
    )


async def accounts_with_stale_events(session: AsyncSession, older_than: datetime) -> list[tuple[int, str]]:
    stmt = (
        select(WebhookEvent.account_id, WebhookEvent.source)
        .where(WebhookEvent.status == "pending", WebhookEvent.received_at < older_than)
        .group_by(WebhookEvent.account_id, WebhookEvent.source)
    )
    return [(int(a), str(s)) for a, s in (await session.execute(stmt)).all()]


async def count_pending_events(session: AsyncSession, account_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == "pending")
    if account_id is not None:
        stmt = stmt.where(WebhookEvent.account_id == account_id)
    return int((await session.execute(stmt)).scalar_one())


async def prune_events(session: AsyncSession, older_than: datetime) -> int:
    result = await session.execute(
        delete(WebhookEvent).where(WebhookEvent.status == "done", WebhookEvent.handled_at < older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- contacts ----------------------------------------------------------------------------------------------


async def contacts_by_ids(session: AsyncSession, account_id: int, ids: Iterable[int]) -> dict[int, Contact]:
    out: dict[int, Contact] = {}
    id_list = sorted(set(ids))
    for chunk in _chunks(id_list):
        stmt = select(Contact).from_statement(
            text(_PG_CONTACTS_BY_IDS).bindparams(account_id=account_id, keys=list(chunk))
        )
        for c in (await session.execute(stmt)).scalars():
            out[c.kommo_id] = c
    return out


async def addresses_of(session: AsyncSession, account_id: int, ids: Iterable[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    id_list = sorted(set(ids))
    for chunk in _chunks(id_list):
        stmt = text(_PG_ADDRESSES_OF).bindparams(account_id=account_id, keys=list(chunk))
        for kid, email in (await session.execute(stmt)).all():
            out.setdefault(int(kid), set()).add(str(email))
    return out


async def replace_addresses(
    session: AsyncSession, account_id: int, changes: dict[int, tuple[set[str], set[str]]]
) -> None:
    """Apply (removed, added) address sets per contact."""
    removals = [(kid, e) for kid, (removed, _) in changes.items() for e in removed]
    additions = [
        {"account_id": account_id, "kommo_id": kid, "email": e}
        for kid, (_, added) in changes.items()
        for e in sorted(added)
    ]
    for chunk in _chunks(removals):
        await session.execute(
            delete(ContactAddress).where(
                ContactAddress.account_id == account_id,
                tuple_(ContactAddress.kommo_id, ContactAddress.email).in_(chunk),
            )
        )
    if additions:
        await _insert_unnest(session, _PG_ADD_ADDRESSES, _ADDRESS_COLUMNS, additions)


async def upsert_contacts(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await _insert_unnest(session, _PG_UPSERT_CONTACTS, _CONTACT_COLUMNS, rows)


async def mark_seen(session: AsyncSession, account_id: int, ids: Sequence[int], run_id: str) -> None:
    for chunk in _chunks(list(ids)):
        await session.execute(
            update(Contact)
            .where(Contact.account_id == account_id, Contact.kommo_id.in_(chunk))
            .values(seen_run_id=run_id)
        )


async def unseen_live_contacts(session: AsyncSession, account_id: int, run_id: str) -> list[int]:
    stmt = select(Contact.kommo_id).where(
        Contact.account_id == account_id,
        Contact.deleted_at.is_(None),
        or_(Contact.seen_run_id.is_(None), Contact.seen_run_id != run_id),
    )
    return [int(x) for x in (await session.execute(stmt)).scalars()]


@dataclass(frozen=True, slots=True)
class Owner:
    kommo_id: int
    name: str
    updated_at: int


async def live_owners(session: AsyncSession, account_id: int, emails: Sequence[str]) -> dict[str, Owner]:
    """Per address, the most recently updated live contact holding it (ties: the higher Kommo id)."""
    best: dict[str, Owner] = {}
    for chunk in _chunks(list(emails)):
        stmt = text(_PG_LIVE_HOLDERS).bindparams(account_id=account_id, keys=list(chunk))
        for email, kid, name, upd in (await session.execute(stmt)).all():
            cand = Owner(int(kid), str(name or ""), int(upd or 0))
            cur = best.get(email)
            if cur is None or (cand.updated_at, cand.kommo_id) > (cur.updated_at, cur.kommo_id):
                best[str(email)] = cand
    return best


async def owners_holding(session: AsyncSession, account_id: int, email: str) -> list[int]:
    stmt = (
        select(ContactAddress.kommo_id)
        .join(
            Contact,
            and_(
                Contact.account_id == ContactAddress.account_id, Contact.kommo_id == ContactAddress.kommo_id
            ),
        )
        .where(
            ContactAddress.account_id == account_id,
            ContactAddress.email == email,
            Contact.deleted_at.is_(None),
        )
    )
    return [int(x) for x in (await session.execute(stmt)).scalars()]


# --- consent -----------------------------------------------------------------------------------------------


async def consent_rows(
    session: AsyncSession, account_id: int, emails: Sequence[str]
) -> dict[str, ContactEmail]:
    out: dict[str, ContactEmail] = {}
    for chunk in _chunks(list(emails)):
        stmt = select(ContactEmail).from_statement(
            text(_PG_CONSENT_ROWS).bindparams(account_id=account_id, keys=list(chunk))
        )
        for row in (await session.execute(stmt)).scalars():
            out[row.email] = row
    return out


async def upsert_owners(session: AsyncSession, account_id: int, owners: dict[str, int | None]) -> None:
    now = utcnow()
    rows = [
        {"account_id": account_id, "email": e, "kommo_id": k, "consent": "subscribed", "updated_at": now}
        for e, k in sorted(owners.items())
    ]
    if rows:
        await _insert_unnest(session, _PG_UPSERT_OWNERS, _OWNER_COLUMNS, rows)


async def mark_unsubscribed(session: AsyncSession, account_id: int, email: str) -> bool:
    """Record an unsubscribe; True when it is new."""
    now = utcnow()
    stmt = insert(ContactEmail).values(
        account_id=account_id, email=email, consent="unsubscribed", unsubscribed_at=now, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "email"],
        set_={"consent": "unsubscribed", "unsubscribed_at": now, "kommo_tagged_at": None, "updated_at": now},
        where=ContactEmail.consent != "unsubscribed",
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def untagged_unsubscribes(
    session: AsyncSession, account_id: int, limit: int = 100
) -> list[ContactEmail]:
    stmt = (
        select(ContactEmail)
        .where(
            ContactEmail.account_id == account_id,
            ContactEmail.consent == "unsubscribed",
            ContactEmail.kommo_tagged_at.is_(None),
        )
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def accounts_with_untagged_unsubscribes(session: AsyncSession) -> list[int]:
    stmt = (
        select(ContactEmail.account_id)
        .where(ContactEmail.consent == "unsubscribed", ContactEmail.kommo_tagged_at.is_(None))
        .group_by(ContactEmail.account_id)
    )
    return [int(x) for x in (await session.execute(stmt)).scalars()]


# --- outbox ------------------------------------------------------------------------------------------------


async def lock_outbox(session: AsyncSession, account_id: int, emails: Sequence[str]) -> dict[str, Outbox]:
    """The outbox rows of these addresses, locked: a flush holding one finishes first, so what we read is current."""
    out: dict[str, Outbox] = {}
    for chunk in _chunks(sorted(set(emails))):
        stmt = select(Outbox).from_statement(
            text(_PG_LOCK_OUTBOX).bindparams(account_id=account_id, keys=list(chunk))
        )
        for row in (await session.execute(stmt)).scalars():
            out[row.email] = row
    return out


async def add_outbox(
    session: AsyncSession, account_id: int, items: list[tuple[str, dict[str, Any], str]]
) -> None:
    now = utcnow()
    rows = [
        {
            "account_id": account_id,
            "email": email,
            "payload": payload,
            "payload_hash": h,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for email, payload, h in items
    ]
    if rows:
        await _insert_unnest(session, _PG_ADD_OUTBOX, _OUTBOX_COLUMNS, rows)


async def cancel_outbox(session: AsyncSession, account_id: int, emails: Sequence[str], reason: str) -> None:
    """Drop pending desires that are no longer wanted (e.g. the address unsubscribed)."""
    for chunk in _chunks(list(emails)):
        await session.execute(
            update(Outbox)
            .where(Outbox.account_id == account_id, Outbox.email.in_(chunk), Outbox.status == "pending")
            .values(status="cancelled", last_error=reason, updated_at=utcnow())
        )


async def claim_outbox(session: AsyncSession, account_id: int, limit: int) -> list[Outbox]:
    stmt = (
        select(Outbox)
        .where(
            Outbox.account_id == account_id, Outbox.status == "pending", Outbox.next_attempt_at <= utcnow()
        )
        .order_by(Outbox.id)
        .limit(limit)
    )
    return list((await session.execute(stmt.with_for_update(skip_locked=True))).scalars())


@dataclass(frozen=True, slots=True)
class DueRow:
    """The columns of a due outbox row a push needs (plain values: no ORM objects to track and flush)."""

    id: int
    email: str
    payload: dict[str, Any]
    payload_hash: str
    attempts: int
    updated_at: datetime


async def claim_due(session: AsyncSession, account_id: int, limit: int) -> list[DueRow]:
    """Due pending rows, oldest first, locked until the transaction ends (rows another flusher holds are
    skipped)."""
    stmt = (
        select(
            Outbox.id, Outbox.email, Outbox.payload, Outbox.payload_hash, Outbox.attempts, Outbox.updated_at
        )
        .where(
            Outbox.account_id == account_id, Outbox.status == "pending", Outbox.next_attempt_at <= utcnow()
        )
        .order_by(Outbox.id)
        .limit(limit)
    )
    return [DueRow(*row) for row in (await session.execute(stmt.with_for_update(skip_locked=True))).all()]


async def mark_pushed(session: AsyncSession, ids: Sequence[int], at: datetime) -> None:
    """The email platform accepted these rows as queued: what it holds is now their payload."""
    table = cast(Table, Outbox.__table__)
    for chunk in _chunks(list(ids)):
        await session.execute(
            update(table)
            .where(table.c.id.in_(chunk))
            .values(
                status="done",
                pushed_hash=table.c.payload_hash,
                pushed_at=at,
                last_error=None,
                reject_code=None,
                updated_at=at,
            )
        )


_OUTBOX_ROW_UPDATE_KEYS = ("status", "attempts", "next_attempt_at", "last_error", "reject_code")


async def update_outbox_rows(session: AsyncSession, changes: Sequence[dict[str, Any]]) -> None:
    """Per-row outcomes: each dict holds ``id`` and every key of ``_OUTBOX_ROW_UPDATE_KEYS``."""
    if not changes:
        return
    table = cast(Table, Outbox.__table__)  # Core, not the ORM's bulk-update-by-primary-key mode
    stmt = (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({key: bindparam(f"new_{key}") for key in _OUTBOX_ROW_UPDATE_KEYS} | {"updated_at": utcnow()})
    )
    rows = [
        {"row_id": change["id"], **{f"new_{key}": change[key] for key in _OUTBOX_ROW_UPDATE_KEYS}}
        for change in changes
    ]
    await _execute_many(session, stmt, rows)


async def accounts_with_due_outbox(session: AsyncSession) -> list[int]:
    stmt = (
        select(Outbox.account_id)
        .where(Outbox.status == "pending", Outbox.next_attempt_at <= utcnow())
        .group_by(Outbox.account_id)
    )
    return [int(x) for x in (await session.execute(stmt)).scalars()]


async def next_due(session: AsyncSession, account_id: int) -> datetime | None:
    stmt = select(func.min(Outbox.next_attempt_at)).where(
        Outbox.account_id == account_id, Outbox.status == "pending"
    )
    value: datetime | None = (await session.execute(stmt)).scalar_one_or_none()
    return value


async def outbox_counts(session: AsyncSession, account_id: int | None = None) -> dict[str, int]:
    stmt = select(Outbox.status, func.count()).group_by(Outbox.status)
    if account_id is not None:
        stmt = stmt.where(Outbox.account_id == account_id)
    return {str(s): int(n) for s, n in (await session.execute(stmt)).all()}


# --- accounts and runs -------------------------------------------------------------------------------------


async def get_integration(session: AsyncSession, account_id: int) -> Integration | None:
    return await session.get(Integration, account_id)


async def get_esp(session: AsyncSession, account_id: int) -> EspAccount | None:
    return await session.get(EspAccount, account_id)


async def connected_account_ids(session: AsyncSession) -> list[int]:
    stmt = select(Integration.account_id).where(Integration.status == "connected")
    return [int(x) for x in (await session.execute(stmt)).scalars()]


async def active_run(session: AsyncSession, account_id: int, kind: str = "full") -> SyncRun | None:
    stmt = (
        select(SyncRun)
        .where(
            SyncRun.account_id == account_id, SyncRun.kind == kind, SyncRun.status.in_(("pending", "running"))
        )
        .order_by(SyncRun.created_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def orphaned_runs(session: AsyncSession, idle: float) -> list[SyncRun]:
    """Unfinished runs no live job advances: their lease expired (the slice holding it died), or nobody has
    held one for ``idle`` seconds (a continuation whose enqueue was lost)."""
    now = utcnow()
    stmt = select(SyncRun).where(
        SyncRun.status.in_(("pending", "running")),
        or_(
            SyncRun.lease_expires_at < now,
            and_(SyncRun.lease_expires_at.is_(None), SyncRun.updated_at < now - timedelta(seconds=idle)),
        ),
    )
    return list((await session.execute(stmt)).scalars())


async def claim_run(session: AsyncSession, run_id: str, owner: str, until: datetime) -> bool:
    """Take the run's lease for ``owner`` until ``until``: atomically, and only if nobody else holds a live one
    (``owner`` may hold it already: a retried job keeps its id). False when another slice holds it or the run
    is finished."""
    now = utcnow()
    result = await session.execute(
        update(SyncRun)
        .where(
            SyncRun.id == run_id,
            SyncRun.status.in_(("pending", "running")),
            or_(SyncRun.lease_owner.is_(None), SyncRun.lease_owner == owner, SyncRun.lease_expires_at < now),
        )
        .values(lease_owner=owner, lease_expires_at=until, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def extend_lease(session: AsyncSession, run_id: str, owner: str, until: datetime) -> bool:
    """Renew ``owner``'s lease (the run's ``updated_at`` too); False when it holds it no more."""
    result = await session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.lease_owner == owner, SyncRun.status.in_(("pending", "running")))
        .values(lease_expires_at=until, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_lease(session: AsyncSession, run_id: str, owner: str) -> None:
    await session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def held_run(session: AsyncSession, run_id: str, owner: str) -> SyncRun | None:
    """The run, locked until the transaction ends, if it is running and ``owner`` holds its lease: a slice
    that lost its lease (it stalled past the expiry and another took over) must not advance the run."""
    stmt = select(SyncRun).where(SyncRun.id == run_id).with_for_update()
    run = (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()
    if run is None or run.status != "running" or run.lease_owner != owner:
        return None
    return run


async def count_slice_failure(session: AsyncSession, run_id: str, reason: str) -> int:
    """Record that a slice of an unfinished run failed; returns the failures in a row (0: finished run)."""
    stmt = (
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.status.in_(("pending", "running")))
        .values(slice_failures=SyncRun.slice_failures + 1, error=reason, updated_at=utcnow())
        .returning(SyncRun.slice_failures)
    )
    value = (await session.execute(stmt)).scalar_one_or_none()
    return int(value or 0)


async def record_sync_failure(session: AsyncSession, run_id: str, kommo_id: int, reason: str) -> None:
    """A contact the run could not apply (once per run and contact: a page read again records it again)."""
    stmt = insert(SyncFailure).values(run_id=run_id, kommo_id=kommo_id, reason=reason, at=utcnow())
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["run_id", "kommo_id"], set_={"reason": reason, "at": utcnow()}
        )
    )


async def sync_failures(session: AsyncSession, run_id: str, limit: int) -> tuple[int, list[SyncFailure]]:
    """How many contacts the run could not apply, and the first ``limit`` of them by Kommo id."""
    count = (
        await session.execute(
            select(func.count()).select_from(SyncFailure).where(SyncFailure.run_id == run_id)
        )
    ).scalar_one()
    if not count:
        return 0, []
    stmt = select(SyncFailure).where(SyncFailure.run_id == run_id).order_by(SyncFailure.kommo_id).limit(limit)
    return int(count), list((await session.execute(stmt)).scalars())


async def list_runs(session: AsyncSession, account_id: int | None, limit: int = 50) -> list[SyncRun]:
    stmt = select(SyncRun).order_by(SyncRun.created_at.desc()).limit(limit)
    if account_id is not None:
        stmt = stmt.where(SyncRun.account_id == account_id)
    return list((await session.execute(stmt)).scalars())


_MIRROR_TABLES = ("contact", "contact_address", "contact_email", "outbox")


async def analyze_mirror(session: AsyncSession) -> None:
    """Refresh PostgreSQL's statistics of the mirror tables.

    A full sync grows these tables faster than autovacuum re-analyses them (it looks once a minute, after
    10 % growth); with statistics from when an account had a few rows, PostgreSQL plans key lookups as scans
    of the whole account, which get slower with every page. ANALYZE samples a bounded number of rows.
    """
    await session.execute(text(f"ANALYZE {', '.join(_MIRROR_TABLES)}"))


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
