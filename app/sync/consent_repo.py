"""SQL of ``contact_email``: per address of an account, its owner, its consent and whether an unsubscribe
was written back to the CRM."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import ContactEmail
from app.db.sql import Columns, chunks, insert_unnest, lateral, unnest_insert
from app.db.states import Consent


@dataclass(frozen=True, slots=True)
class _OwnerRow:
    email: str
    kommo_id: int | None


_OWNER_COLUMNS: Columns = (
    ("account_id", "BIGINT"),
    ("email", "TEXT"),
    ("kommo_id", "BIGINT"),
    ("consent", "TEXT"),
    ("updated_at", "TIMESTAMPTZ"),
)
_UPSERT_OWNERS = unnest_insert(
    "contact_email",
    _OWNER_COLUMNS,
    "ON CONFLICT (account_id, email) DO UPDATE SET kommo_id = EXCLUDED.kommo_id, updated_at = EXCLUDED.updated_at",
)
_CONSENT_ROWS = lateral(
    "CAST(:keys AS TEXT[])",
    "email",
    "SELECT * FROM contact_email WHERE account_id = :account_id AND email = q.email",
)


async def consent_rows(
    session: AsyncSession, account_id: int, emails: Sequence[str]
) -> dict[str, ContactEmail]:
    out: dict[str, ContactEmail] = {}
    for chunk in chunks(list(emails)):
        stmt = select(ContactEmail).from_statement(
            text(_CONSENT_ROWS).bindparams(account_id=account_id, keys=list(chunk))
        )
        for row in (await session.execute(stmt)).scalars():
            out[row.email] = row
    return out


async def unsubscribed(session: AsyncSession, account_id: int, emails: Sequence[str]) -> set[str]:
    """Which of ``emails`` are unsubscribed."""
    rows = await consent_rows(session, account_id, emails)
    return {email for email, row in rows.items() if row.consent == Consent.UNSUBSCRIBED}


async def upsert_owners(session: AsyncSession, account_id: int, owners: Mapping[str, int | None]) -> None:
    """Record each address's owner (None: no live contact holds it); a new address is subscribed."""
    rows = [_OwnerRow(e, k) for e, k in sorted(owners.items())]
    constants = {"account_id": account_id, "consent": Consent.SUBSCRIBED.value, "updated_at": utcnow()}
    await insert_unnest(session, _UPSERT_OWNERS, _OWNER_COLUMNS, rows, constants)


async def mark_unsubscribed(session: AsyncSession, account_id: int, email: str) -> bool:
    """Record an unsubscribe; True when it is new."""
    now = utcnow()
    stmt = insert(ContactEmail).values(
        account_id=account_id, email=email, consent=Consent.UNSUBSCRIBED, unsubscribed_at=now, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "email"],
        set_={
            "consent": Consent.UNSUBSCRIBED,
            "unsubscribed_at": now,
            "kommo_tagged_at": None,
            "updated_at": now,
        },
        where=ContactEmail.consent != Consent.UNSUBSCRIBED,
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_tagged(session: AsyncSession, account_id: int, email: str, at: datetime) -> None:
    """The unsubscribe of ``email`` is written back to the CRM."""
    rows = await consent_rows(session, account_id, [email])
    if email in rows:
        rows[email].kommo_tagged_at = at


async def untagged_unsubscribes(
    session: AsyncSession, account_id: int, limit: int = 100
) -> list[ContactEmail]:
    stmt = (
        select(ContactEmail)
        .where(
            ContactEmail.account_id == account_id,
            ContactEmail.consent == Consent.UNSUBSCRIBED,
            ContactEmail.kommo_tagged_at.is_(None),
        )
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def accounts_with_untagged_unsubscribes(session: AsyncSession) -> list[int]:
    stmt = (
        select(ContactEmail.account_id)
        .where(ContactEmail.consent == Consent.UNSUBSCRIBED, ContactEmail.kommo_tagged_at.is_(None))
        .group_by(ContactEmail.account_id)
    )
    return [int(x) for x in (await session.execute(stmt)).scalars()]
