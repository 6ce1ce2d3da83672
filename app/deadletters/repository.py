"""SQL of dead letters: a view over the rows of four tables in their dead states, the updates that replay or
discard them, and ``dead_letter_action``, the record of those updates.

Each update names the dead states in its WHERE clause, so a row that is no longer dead (replayed by another
request meanwhile, or recovered on its own) is left alone and counted as skipped: replay and discard are
idempotent whatever runs beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    Text,
    any_,
    bindparam,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.db.base import utcnow
from app.db.models import CrmWrite, Outbox, Signup, WebhookEvent
from app.db.operator_models import DeadLetterAction
from app.db.states import (
    CrmWriteState,
    DeadLetterKind,
    DeadLetterOperation,
    EventSource,
    EventStatus,
    OutboxStatus,
    SignupState,
)


@dataclass(frozen=True, slots=True)
class _Table:
    """Where one kind of dead letter lives."""

    model: Any
    state: InstrumentedAttribute[Any]  # the state column
    dead: tuple[str, ...]  # its dead states
    discarded: str
    at: Any  # when the row died (a column or an expression)


TABLES: dict[DeadLetterKind, _Table] = {
    DeadLetterKind.EVENT: _Table(
        WebhookEvent,
        WebhookEvent.status,
        (EventStatus.FAILED.value, EventStatus.UNRECOGNISED.value),
        EventStatus.DISCARDED.value,
        func.coalesce(WebhookEvent.handled_at, WebhookEvent.received_at),  # unrecognised: never handled
    ),
    DeadLetterKind.OUTBOX: _Table(
        Outbox,
        Outbox.status,
        (OutboxStatus.REJECTED.value, OutboxStatus.DEAD.value),
        OutboxStatus.DISCARDED.value,
        Outbox.updated_at,
    ),
    DeadLetterKind.CRM_WRITE: _Table(
        CrmWrite,
        CrmWrite.state,
        (CrmWriteState.FAILED.value,),
        CrmWriteState.DISCARDED.value,
        func.coalesce(CrmWrite.handled_at, CrmWrite.created_at),
    ),
    DeadLetterKind.SIGNUP: _Table(
        Signup,
        Signup.state,
        (SignupState.FAILED.value,),
        SignupState.DISCARDED.value,
        func.coalesce(Signup.handled_at, Signup.created_at),
    ),
}


@dataclass(frozen=True, slots=True)
class Row:
    """One dead letter as stored (plain values)."""

    kind: DeadLetterKind
    id: int
    status: str
    error: str | None
    code: str | None
    attempts: int | None
    at: datetime
    email: str | None
    kommo_id: int | None
    detail: str | None


def _ids(ids: Sequence[int]) -> Any:
    return any_(bindparam("ids", list(ids), type_=ARRAY(BigInteger)))


def _dead(kind: DeadLetterKind, account_id: int) -> list[ColumnElement[bool]]:
    t = TABLES[kind]
    return [t.model.account_id == account_id, type_coerce(t.state, String).in_(t.dead)]


def _text(value: Any) -> Any:
    return cast(value, Text)


def _none(type_: Any = Text) -> Any:
    return cast(null(), type_)


def _listing(kind: DeadLetterKind, account_id: int) -> Select[Any]:
    """The kind's dead rows with the columns every kind shares (the state as plain text: the four state
    columns hold different enums, and a UNION reads every row with the first SELECT's types)."""
    t = TABLES[kind]
    state = type_coerce(t.state, String)
    label = literal(kind.value, String)
    cols: tuple[Any, ...]
    if kind is DeadLetterKind.EVENT:
        cols = (
            WebhookEvent.last_error,
            _none(),
            WebhookEvent.attempts,
            _none(),
            _none(BigInteger),
            _text(type_coerce(WebhookEvent.source, String)),
        )
    elif kind is DeadLetterKind.OUTBOX:
        code, email = _text(Outbox.reject_code), _text(Outbox.email)
        cols = (Outbox.last_error, code, Outbox.attempts, email, _none(BigInteger), _none())
    elif kind is DeadLetterKind.CRM_WRITE:
        field = CrmWrite.source + " → " + CrmWrite.target
        cols = (CrmWrite.last_error, _none(), _none(Integer), _text(CrmWrite.email), CrmWrite.kommo_id, field)
    else:
        cols = (Signup.last_error, _none(), _none(Integer), _text(Signup.email), Signup.kommo_id, _none())
    names = ("error", "code", "attempts", "email", "kommo_id", "detail")
    return select(
        label.label("kind"),
        t.model.id.label("id"),
        state.label("status"),
        *(col.label(name) for col, name in zip(cols, names, strict=True)),
        t.at.label("at"),
    ).where(*_dead(kind, account_id))


async def page(
    session: AsyncSession, account_id: int, kinds: Sequence[DeadLetterKind], *, offset: int, limit: int
) -> list[Row]:
    """The dead rows of ``kinds``, newest first."""
    parts = [_listing(kind, account_id) for kind in kinds]
    query = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
    stmt = (
        select(query).order_by(query.c.at.desc(), query.c.kind, query.c.id.desc()).offset(offset).limit(limit)
    )
    out: list[Row] = []
    for r in (await session.execute(stmt)).all():
        out.append(
            Row(
                DeadLetterKind(r.kind),
                int(r.id),
                str(r.status),
                r.error,
                r.code,
                r.attempts,
                r.at,
                r.email,
                r.kommo_id,
                r.detail,
            )
        )
    return out


async def counts(session: AsyncSession, account_id: int) -> dict[DeadLetterKind, int]:
    """Dead rows per kind (every kind, zeros included), in one statement."""
    parts = [
        select(literal(kind.value, String).label("kind"), func.count().label("n"))
        .select_from(TABLES[kind].model)
        .where(*_dead(kind, account_id))
        for kind in TABLES
    ]
    found = {DeadLetterKind(k): int(n) for k, n in (await session.execute(union_all(*parts))).all()}
    return {kind: found.get(kind, 0) for kind in TABLES}


async def counts_all(session: AsyncSession) -> dict[DeadLetterKind, int]:
    """Dead rows per kind over every account (every kind, zeros included), for the sweeper's gauge."""
    parts = [
        select(literal(kind.value, String).label("kind"), func.count().label("n"))
        .select_from(t.model)
        .where(type_coerce(t.state, String).in_(t.dead))
        for kind, t in TABLES.items()
    ]
    found = {DeadLetterKind(k): int(n) for k, n in (await session.execute(union_all(*parts))).all()}
    return {kind: found.get(kind, 0) for kind in TABLES}


async def counts_by_account(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, int]:
    """Dead rows per account (every kind), for ``account_ids``, in one statement; accounts without any are
    absent."""
    if not account_ids:
        return {}
    parts = []
    for kind in TABLES:
        t = TABLES[kind]
        dead = type_coerce(t.state, String).in_(t.dead)
        parts.append(
            select(t.model.account_id.label("account_id"), func.count().label("n"))
            .where(t.model.account_id == _ids(account_ids), dead)
            .group_by(t.model.account_id)
        )
    query = union_all(*parts).subquery()
    stmt = select(query.c.account_id, func.sum(query.c.n)).group_by(query.c.account_id)
    return {int(a): int(n) for a, n in (await session.execute(stmt)).all()}


async def existing(
    session: AsyncSession, account_id: int, kind: DeadLetterKind, ids: Sequence[int]
) -> set[int]:
    """Which of ``ids`` are rows of this account (in any state)."""
    model = TABLES[kind].model
    stmt = select(model.id).where(model.account_id == account_id, model.id == _ids(ids))
    return {int(i) for i in (await session.execute(stmt)).scalars()}


async def dead_ids(
    session: AsyncSession, account_id: int, kind: DeadLetterKind, *, before: datetime | None, limit: int
) -> list[int]:
    """Up to ``limit`` dead rows of the kind, oldest first (that died at or before ``before`` when given)."""
    t = TABLES[kind]
    stmt = select(t.model.id).where(*_dead(kind, account_id)).order_by(t.at, t.model.id).limit(limit)
    if before is not None:
        stmt = stmt.where(t.at <= before)
    return [int(i) for i in (await session.execute(stmt)).scalars()]


async def revive(
    session: AsyncSession, account_id: int, kind: DeadLetterKind, ids: Sequence[int], now: datetime
) -> list[tuple[int, str | None]]:
    """Put the dead rows among ``ids`` back where their normal path picks them up (pending, due now, attempts
    and last outcome forgotten); returns each one's (id, key): an event's source, an outbox row's address."""
    if not ids:
        return []
    t = TABLES[kind]
    values: dict[str, Any]
    key: Any
    if kind is DeadLetterKind.EVENT:
        values = {"status": EventStatus.PENDING, "attempts": 0, "last_error": None, "handled_at": None}
        key = WebhookEvent.source
    elif kind is DeadLetterKind.OUTBOX:
        values = {
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": None,
            "reject_code": None,
            "bulk": False,
            "updated_at": now,
        }
        key = Outbox.email
    elif kind is DeadLetterKind.CRM_WRITE:
        values = {"state": CrmWriteState.PENDING, "last_error": None, "handled_at": None}
        key = _none()
    else:
        values = {"state": SignupState.PENDING, "last_error": None, "handled_at": None}
        key = _none()
    stmt = (
        update(t.model)
        .where(*_dead(kind, account_id), t.model.id == _ids(ids))
        .values(**values)
        .returning(t.model.id, key)
        .execution_options(synchronize_session=False)
    )
    return [(int(i), None if k is None else str(k)) for i, k in (await session.execute(stmt)).all()]


async def queue_as_bulk(session: AsyncSession, account_id: int, ids: Sequence[int]) -> None:
    """Replayed outbox rows still to push go behind live changes (they are bulk work, as a full sync's)."""
    if not ids:
        return
    await session.execute(
        update(Outbox)
        .where(
            Outbox.account_id == account_id,
            Outbox.id == _ids(ids),
            Outbox.status == OutboxStatus.PENDING,
        )
        .values(bulk=True)
        .execution_options(synchronize_session=False)
    )


async def discard(
    session: AsyncSession, account_id: int, kind: DeadLetterKind, ids: Sequence[int], now: datetime
) -> list[int]:
    """Mark the dead rows among ``ids`` discarded (their reason is kept); returns their ids."""
    if not ids:
        return []
    t = TABLES[kind]
    values: dict[str, Any] = {t.state.key: t.discarded}
    if kind is DeadLetterKind.OUTBOX:
        values["updated_at"] = now
    stmt = (
        update(t.model)
        .where(*_dead(kind, account_id), t.model.id == _ids(ids))
        .values(**values)
        .returning(t.model.id)
        .execution_options(synchronize_session=False)
    )
    return [int(i) for i in (await session.execute(stmt)).scalars()]


def event_sources(revived: Sequence[tuple[int, str | None]]) -> set[EventSource]:
    return {EventSource(k) for _, k in revived if k is not None}


async def record_action(
    session: AsyncSession,
    *,
    account_id: int,
    operation: DeadLetterOperation,
    actor: str,
    kind: DeadLetterKind | None,
    selected_all: bool,
    requested: int,
    affected: int,
    skipped: int,
    items: dict[str, list[int]],
    at: datetime | None = None,
) -> DeadLetterAction:
    action = DeadLetterAction(
        account_id=account_id,
        operation=operation,
        actor=actor,
        kind=kind,
        selected_all=selected_all,
        requested=requested,
        affected=affected,
        skipped=skipped,
        items=items,
        created_at=at or utcnow(),
    )
    session.add(action)
    await session.flush()
    return action


async def actions(
    session: AsyncSession, account_id: int, *, offset: int, limit: int
) -> tuple[list[DeadLetterAction], int]:
    """The account's actions, newest first, and how many it has."""
    where = DeadLetterAction.account_id == account_id
    total = (await session.execute(select(func.count()).where(where))).scalar_one()
    stmt = (
        select(DeadLetterAction)
        .where(where)
        .order_by(DeadLetterAction.created_at.desc(), DeadLetterAction.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars()), int(total)
