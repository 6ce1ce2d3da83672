"""SQL of ``contact_email``: per address of an account, its owner, its consent and whether an unsubscribe
was written back to the CRM."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, any_, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import ContactEmail, ListUnsubscribe
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


def _keys(emails: Sequence[str]) -> Any:
    """Addresses as one array parameter (``= ANY``): an IN list of hundreds is expanded per call."""
    return bindparam("keys", list(emails), type_=ARRAY(String))


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
    """Which of ``emails`` are never to be pushed again: unsubscribed, hard-bounced or complained."""
    found: set[str] = set()
    for chunk in chunks(list(emails)):
        stmt = select(ContactEmail.email).where(
            ContactEmail.account_id == account_id,
            ContactEmail.email == any_(_keys(chunk)),
            ContactEmail.consent != Consent.SUBSCRIBED,
        )
        found.update(str(e) for e in (await session.execute(stmt)).scalars())
    return found


async def owner_ids(session: AsyncSession, account_id: int, emails: Sequence[str]) -> dict[str, int]:
    """The Kommo contact that owns each of ``emails`` (as the mirror last recorded it; addresses no live
    contact holds are absent)."""
    found: dict[str, int] = {}
    for chunk in chunks(list(emails)):
        stmt = select(ContactEmail.email, ContactEmail.kommo_id).where(
            ContactEmail.account_id == account_id,
            ContactEmail.email == any_(_keys(chunk)),
            ContactEmail.kommo_id.is_not(None),
        )
        found.update({str(e): int(k) for e, k in (await session.execute(stmt)).all() if k is not None})
    return found


async def upsert_owners(session: AsyncSession, account_id: int, owners: Mapping[str, int | None]) -> None:
    """Record each address's owner (None: no live contact holds it); a new address is subscribed."""
    rows = [_OwnerRow(e, k) for e, k in sorted(owners.items())]
    constants = {"account_id": account_id, "consent": Consent.SUBSCRIBED.value, "updated_at": utcnow()}
    await insert_unnest(session, _UPSERT_OWNERS, _OWNER_COLUMNS, rows, constants)


async def mark_unsubscribed(
    session: AsyncSession, account_id: int, email: str, consent: Consent = Consent.UNSUBSCRIBED
) -> bool:
    """Record that the address takes no more mail from us (``consent``: unsubscribed, bounced or
    complained); True when it is new. An unsubscribe replaces a bounce or complaint (it is the contact's
    own word, and its tag is the one users filter on); a bounce or complaint never replaces another state."""
    now = utcnow()
    stmt = insert(ContactEmail).values(
        account_id=account_id, email=email, consent=consent, unsubscribed_at=now, updated_at=now
    )
    replaces = (
        ContactEmail.consent != Consent.UNSUBSCRIBED
        if consent == Consent.UNSUBSCRIBED
        else ContactEmail.consent == Consent.SUBSCRIBED
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "email"],
        set_={"consent": consent, "unsubscribed_at": now, "kommo_tagged_at": None, "updated_at": now},
        where=replaces,
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
            ContactEmail.consent != Consent.SUBSCRIBED,
            ContactEmail.kommo_tagged_at.is_(None),
        )
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def stopped_among(session: AsyncSession, account_id: int, emails: Sequence[str]) -> list[str]:
    """Those of ``emails`` that take no more mail from us or left a list (their CRM holders carry a tag)."""
    found = await unsubscribed(session, account_id, emails)
    found.update(await list_unsubscribes(session, account_id, emails))
    return sorted(found)


async def untag(session: AsyncSession, account_id: int, emails: Sequence[str]) -> None:
    """Make the write-back of ``emails``' stops and list unsubscribes due again (a new CRM holder to tag)."""
    for chunk in chunks(list(emails)):
        await session.execute(
            update(ContactEmail)
            .where(
                ContactEmail.account_id == account_id,
                ContactEmail.email == any_(_keys(chunk)),
                ContactEmail.consent != Consent.SUBSCRIBED,
            )
            .values(kommo_tagged_at=None)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(ListUnsubscribe)
            .where(ListUnsubscribe.account_id == account_id, ListUnsubscribe.email == any_(_keys(chunk)))
            .values(kommo_tagged_at=None)
            .execution_options(synchronize_session=False)
        )


async def accounts_with_untagged_unsubscribes(session: AsyncSession) -> list[int]:
    """Accounts with an unsubscribe (from everything, or from one list) not yet written back to the CRM."""
    stmt = (
        select(ContactEmail.account_id)
        .where(ContactEmail.consent != Consent.SUBSCRIBED, ContactEmail.kommo_tagged_at.is_(None))
        .union(select(ListUnsubscribe.account_id).where(ListUnsubscribe.kommo_tagged_at.is_(None)))
    )
    return sorted({int(x) for x in (await session.execute(stmt)).scalars()})


# --- per-list unsubscribes ------------------------------------------------------------------------------------


async def list_unsubscribes(
    session: AsyncSession, account_id: int, emails: Sequence[str]
) -> dict[str, frozenset[int]]:
    """Per address (those with any), the lists it unsubscribed from."""
    found: dict[str, set[int]] = {}
    for chunk in chunks(list(emails)):
        stmt = select(ListUnsubscribe.email, ListUnsubscribe.list_id).where(
            ListUnsubscribe.account_id == account_id, ListUnsubscribe.email == any_(_keys(chunk))
        )
        for email, list_id in (await session.execute(stmt)).all():
            found.setdefault(str(email), set()).add(int(list_id))
    return {email: frozenset(ids) for email, ids in found.items()}


async def mark_list_unsubscribed(session: AsyncSession, account_id: int, email: str, list_id: int) -> bool:
    """Record an address's unsubscribe from one list; True when it is new."""
    stmt = (
        insert(ListUnsubscribe)
        .values(account_id=account_id, email=email, list_id=list_id, unsubscribed_at=utcnow())
        .on_conflict_do_nothing()
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def untagged_list_unsubscribes(
    session: AsyncSession, account_id: int, limit: int = 100
) -> list[ListUnsubscribe]:
    stmt = (
        select(ListUnsubscribe)
        .where(ListUnsubscribe.account_id == account_id, ListUnsubscribe.kommo_tagged_at.is_(None))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def addresses_after(
    session: AsyncSession, account_id: int, after_id: int, limit: int
) -> list[tuple[int, str]]:
    """The account's addresses (id, email) after ``after_id``, in id order: a walk over all of them that
    resumes where it stopped."""
    stmt = (
        select(ContactEmail.id, ContactEmail.email)
        .where(ContactEmail.account_id == account_id, ContactEmail.id > after_id)
        .order_by(ContactEmail.id)
        .limit(limit)
    )
    return [(int(i), str(e)) for i, e in (await session.execute(stmt)).all()]
