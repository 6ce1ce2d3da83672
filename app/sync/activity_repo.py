"""SQL of ``email_activity`` (what the email platform reported about letters, once per event) and
``activity_note`` (the CRM note per contact, campaign and kind that later events of that kind update) and
``activity_note_intent`` (notes being added, until their call's outcome is recorded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import ActivityNote, ActivityNoteIntent, EmailActivity
from app.db.sql import Columns, chunks, insert_unnest, unnest_insert
from app.db.states import ActivityState


@dataclass(frozen=True, slots=True)
class NewActivity:
    email: str
    kind: str
    campaign_id: int | None
    list_id: int | None
    status: str | None
    occurred_at: datetime
    event_key: str


_COLUMNS: Columns = (
    ("account_id", "BIGINT"),
    ("email", "TEXT"),
    ("kind", "TEXT"),
    ("campaign_id", "BIGINT"),
    ("list_id", "BIGINT"),
    ("status", "TEXT"),
    ("occurred_at", "TIMESTAMPTZ"),
    ("event_key", "TEXT"),
    ("state", "TEXT"),
    ("created_at", "TIMESTAMPTZ"),
)
# An event stored before (a redelivery the inbox did not catch, a re-read) is kept once.
_ADD = unnest_insert("email_activity", _COLUMNS, "ON CONFLICT (account_id, event_key) DO NOTHING")


async def add_activity(session: AsyncSession, account_id: int, rows: Sequence[NewActivity]) -> None:
    constants = {"account_id": account_id, "state": ActivityState.PENDING.value, "created_at": utcnow()}
    await insert_unnest(session, _ADD, _COLUMNS, rows, constants)


async def pending_activity(session: AsyncSession, account_id: int, limit: int) -> list[EmailActivity]:
    """The oldest events not yet written to the CRM, locked until the transaction ends."""
    stmt = (
        select(EmailActivity)
        .where(EmailActivity.account_id == account_id, EmailActivity.state == ActivityState.PENDING)
        .order_by(EmailActivity.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


_SET_STATE = (
    "UPDATE email_activity SET state = :state, handled_at = :now WHERE id = ANY(CAST(:ids AS BIGINT[]))"
)


async def set_state(session: AsyncSession, ids: Sequence[int], state: ActivityState) -> None:
    """One statement per chunk, no ORM bookkeeping: a round marks hundreds of events (an ORM bulk UPDATE
    matched every loaded row of the session against its criteria, per call)."""
    now = utcnow()
    for chunk in chunks(list(ids)):
        await session.execute(text(_SET_STATE), {"state": state.value, "now": now, "ids": list(chunk)})


async def accounts_with_pending_activity(session: AsyncSession) -> list[int]:
    stmt = select(EmailActivity.account_id).where(EmailActivity.state == ActivityState.PENDING).distinct()
    return sorted(int(x) for x in (await session.execute(stmt)).scalars())


async def activity_counts(session: AsyncSession, account_id: int) -> dict[str, dict[str, int]]:
    """Per kind, how many events are in each state (what the account's views show)."""
    stmt = (
        select(EmailActivity.kind, EmailActivity.state, func.count())
        .where(EmailActivity.account_id == account_id)
        .group_by(EmailActivity.kind, EmailActivity.state)
    )
    out: dict[str, dict[str, int]] = {}
    for kind, state, n in (await session.execute(stmt)).all():
        out.setdefault(str(kind), {})[str(state)] = int(n)
    return out


# --- notes ----------------------------------------------------------------------------------------------------

NoteKey = tuple[int, int, str]  # Kommo contact id, campaign id (0: none), kind


async def notes_for(
    session: AsyncSession, account_id: int, keys: Sequence[NoteKey]
) -> dict[NoteKey, ActivityNote]:
    out: dict[NoteKey, ActivityNote] = {}
    for chunk in chunks(list(keys)):
        stmt = select(ActivityNote).where(
            ActivityNote.account_id == account_id,
            tuple_(ActivityNote.kommo_id, ActivityNote.campaign_id, ActivityNote.kind).in_(list(chunk)),
        )
        for note in (await session.execute(stmt)).scalars():
            out[(note.kommo_id, note.campaign_id, note.kind)] = note
    return out


@dataclass(frozen=True, slots=True)
class SavedNote:
    kommo_id: int
    campaign_id: int
    kind: str
    note_id: int
    count: int
    last_at: datetime


_NOTE_COLUMNS: Columns = (
    ("account_id", "BIGINT"),
    ("kommo_id", "BIGINT"),
    ("campaign_id", "BIGINT"),
    ("kind", "TEXT"),
    ("note_id", "BIGINT"),
    ("count", "INTEGER"),
    ("last_at", "TIMESTAMPTZ"),
    ("updated_at", "TIMESTAMPTZ"),
)
_SAVE_NOTES = unnest_insert(
    "activity_note",
    _NOTE_COLUMNS,
    "ON CONFLICT (account_id, kommo_id, campaign_id, kind) DO UPDATE SET note_id = EXCLUDED.note_id,"
    " count = EXCLUDED.count, last_at = EXCLUDED.last_at, updated_at = EXCLUDED.updated_at",
)


async def save_notes(session: AsyncSession, account_id: int, notes: Sequence[SavedNote]) -> None:
    """Remember the notes written (or updated) for these contacts, campaigns and kinds: one statement."""
    await insert_unnest(
        session, _SAVE_NOTES, _NOTE_COLUMNS, notes, {"account_id": account_id, "updated_at": utcnow()}
    )


@dataclass(frozen=True, slots=True)
class Intent:
    kommo_id: int
    campaign_id: int
    kind: str
    text: str
    created_at: datetime


async def add_intents(session: AsyncSession, account_id: int, intents: Sequence[tuple[NoteKey, str]]) -> None:
    """Notes about to be added (the round's transaction commits them also when the call fails)."""
    if not intents:
        return
    now = utcnow()
    stmt = pg_insert(ActivityNoteIntent).values(
        [
            {
                "account_id": account_id,
                "kommo_id": k,
                "campaign_id": c,
                "kind": kind,
                "text": t,
                "created_at": now,
            }
            for (k, c, kind), t in intents
        ]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["account_id", "kommo_id", "campaign_id", "kind"],
            set_={"text": stmt.excluded.text, "created_at": stmt.excluded.created_at},
        )
    )


async def intents(session: AsyncSession, account_id: int) -> list[Intent]:
    stmt = select(
        ActivityNoteIntent.kommo_id,
        ActivityNoteIntent.campaign_id,
        ActivityNoteIntent.kind,
        ActivityNoteIntent.text,
        ActivityNoteIntent.created_at,
    ).where(ActivityNoteIntent.account_id == account_id)
    return [Intent(*row) for row in (await session.execute(stmt)).all()]


async def drop_intents(session: AsyncSession, account_id: int, keys: Sequence[NoteKey]) -> None:
    for chunk in chunks(list(keys)):
        await session.execute(
            delete(ActivityNoteIntent).where(
                ActivityNoteIntent.account_id == account_id,
                tuple_(
                    ActivityNoteIntent.kommo_id, ActivityNoteIntent.campaign_id, ActivityNoteIntent.kind
                ).in_(list(chunk)),
            )
        )
