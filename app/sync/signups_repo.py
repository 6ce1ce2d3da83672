"""SQL of ``signup``: one row per address of an account that joined a mapped list by itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import String, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Integration, Signup
from app.db.sql import chunks
from app.db.states import IntegrationStatus, SignupState


@dataclass(frozen=True, slots=True)
class NewSignup:
    email: str
    list_ids: list[int]
    state: SignupState
    kommo_id: int | None = None


async def signups_for(session: AsyncSession, account_id: int, emails: Sequence[str]) -> dict[str, Signup]:
    """The rows of these addresses, locked until the transaction ends (a job may be settling them)."""
    out: dict[str, Signup] = {}
    for chunk in chunks(sorted(set(emails))):
        stmt = (
            select(Signup)
            .where(
                Signup.account_id == account_id,
                Signup.email == any_(bindparam("keys", list(chunk), type_=ARRAY(String))),
            )
            .order_by(Signup.id)  # the lock order of every writer of these rows: no deadlock between two
            .with_for_update()
        )
        for row in (await session.execute(stmt)).scalars():
            out[row.email] = row
    return out


async def add_signups(session: AsyncSession, account_id: int, rows: Sequence[NewSignup]) -> int:
    """Insert new rows; an address that has one already keeps it (the unique constraint decides, so two
    transactions recording the same address cannot both add it). Returns how many were added."""
    added = 0
    now = utcnow()
    for row in rows:
        handled = now if row.state is not SignupState.PENDING else None
        stmt = (
            insert(Signup)
            .values(
                account_id=account_id,
                email=row.email,
                list_id=row.list_ids[0],
                list_ids=row.list_ids,
                state=row.state,
                kommo_id=row.kommo_id,
                created_at=now,
                handled_at=handled,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "email"])
            .returning(Signup.id)
        )
        added += (await session.execute(stmt)).first() is not None
    return added


async def pending_signups(session: AsyncSession, account_id: int, limit: int) -> list[Signup]:
    stmt = (
        select(Signup)
        .where(Signup.account_id == account_id, Signup.state == SignupState.PENDING)
        .order_by(Signup.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def lock_signups(session: AsyncSession, ids: Sequence[int]) -> dict[int, Signup]:
    """These rows by id, locked (in id order) until the transaction ends."""
    out: dict[int, Signup] = {}
    for chunk in chunks(sorted(set(ids))):
        stmt = select(Signup).where(Signup.id.in_(list(chunk))).order_by(Signup.id).with_for_update()
        for row in (await session.execute(stmt)).scalars():
            out[row.id] = row
    return out


async def accounts_with_pending_signups(session: AsyncSession) -> list[int]:
    """Connected accounts with a signup still to settle (a disconnected one waits for its reconnection)."""
    stmt = (
        select(Signup.account_id)
        .join(Integration, Integration.account_id == Signup.account_id)
        .where(Signup.state == SignupState.PENDING, Integration.status == IntegrationStatus.CONNECTED)
        .distinct()
    )
    return sorted(int(x) for x in (await session.execute(stmt)).scalars())


async def signup_counts(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Per account, its signups by state (accounts without any are absent)."""
    if not account_ids:
        return {}
    stmt = (
        select(Signup.account_id, Signup.state, func.count())
        .where(Signup.account_id.in_(list(account_ids)))
        .group_by(Signup.account_id, Signup.state)
    )
    out: dict[int, dict[str, int]] = {}
    for account_id, state, n in (await session.execute(stmt)).all():
        out.setdefault(int(account_id), {})[str(state)] = int(n)
    return out
