"""SQL of the CRM's contacts as the mirror holds them: ``contact`` (the latest version applied) and
``contact_address`` (which live contact holds which address), and the owner queries over both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Contact, ContactAddress
from app.db.sql import Columns, analyze, chunks, insert_unnest, lateral, unnest_insert
from app.sync.mapping import ContactView


@dataclass(frozen=True, slots=True)
class ContactRow:
    """One contact version to store (insert or replace)."""

    kommo_id: int
    name: str
    emails: list[str]  # normalised, sorted
    tags: list[str]
    kommo_updated_at: int
    seen_run_id: str | None
    data: dict[str, Any]  # app.sync.mapping.contact_data
    field_times: dict[str, int]  # app.sync.field_times.stamp
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AddressChange:
    """The addresses a contact stopped holding and those it started holding."""

    removed: set[str]
    added: set[str]


@dataclass(frozen=True, slots=True)
class _AddressRow:
    kommo_id: int
    email: str


@dataclass(frozen=True, slots=True)
class Owner:
    kommo_id: int
    name: str
    updated_at: int
    tags: list[str]
    data: dict[str, Any]
    emails: list[str]

    def view(self) -> ContactView:
        return ContactView(self.kommo_id, self.name, self.tags, self.data, self.emails)


_CONTACT_COLUMNS: Columns = (
    ("account_id", "BIGINT"),
    ("kommo_id", "BIGINT"),
    ("name", "TEXT"),
    ("emails", "JSON"),
    ("tags", "JSON"),
    ("data", "JSON"),
    ("kommo_updated_at", "BIGINT"),
    ("field_times", "JSON"),
    ("deleted_at", "TIMESTAMPTZ"),
    ("seen_run_id", "TEXT"),
    ("updated_at", "TIMESTAMPTZ"),
)
_UPSERT_CONTACTS = unnest_insert(
    "contact",
    _CONTACT_COLUMNS,
    "ON CONFLICT (account_id, kommo_id) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in _CONTACT_COLUMNS[2:]),
)
_ADDRESS_COLUMNS: Columns = (("account_id", "BIGINT"), ("kommo_id", "BIGINT"), ("email", "TEXT"))
_ADD_ADDRESSES = unnest_insert("contact_address", _ADDRESS_COLUMNS, "ON CONFLICT DO NOTHING")

_CONTACTS_BY_IDS = lateral(
    "CAST(:keys AS BIGINT[])",
    "kommo_id",
    "SELECT * FROM contact WHERE account_id = :account_id AND kommo_id = q.kommo_id",
)
_ADDRESSES_OF = lateral(
    "CAST(:keys AS BIGINT[])",
    "kommo_id",
    "SELECT kommo_id, email FROM contact_address WHERE account_id = :account_id AND kommo_id = q.kommo_id",
)
_LIVE_HOLDERS = lateral(
    "CAST(:keys AS TEXT[])",
    "email",
    "SELECT a.email, c.kommo_id, c.name, c.kommo_updated_at, c.tags, c.data, c.emails"
    " FROM contact_address a"
    " JOIN contact c ON c.account_id = a.account_id AND c.kommo_id = a.kommo_id"
    " WHERE a.account_id = :account_id AND a.email = q.email AND c.deleted_at IS NULL",
)
# The mirror's tables, whose statistics a full sync refreshes as it grows them.
_MIRROR_TABLES = ("contact", "contact_address", "contact_email", "outbox")


async def contacts_by_ids(session: AsyncSession, account_id: int, ids: Iterable[int]) -> dict[int, Contact]:
    out: dict[int, Contact] = {}
    for chunk in chunks(sorted(set(ids))):
        stmt = select(Contact).from_statement(
            text(_CONTACTS_BY_IDS).bindparams(account_id=account_id, keys=list(chunk))
        )
        for c in (await session.execute(stmt)).scalars():
            out[c.kommo_id] = c
    return out


async def addresses_of(session: AsyncSession, account_id: int, ids: Iterable[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for chunk in chunks(sorted(set(ids))):
        stmt = text(_ADDRESSES_OF).bindparams(account_id=account_id, keys=list(chunk))
        for kid, email in (await session.execute(stmt)).all():
            out.setdefault(int(kid), set()).add(str(email))
    return out


async def replace_addresses(
    session: AsyncSession, account_id: int, changes: Mapping[int, AddressChange]
) -> None:
    """Apply each contact's address change."""
    removals = [(kid, e) for kid, change in changes.items() for e in change.removed]
    additions = [_AddressRow(kid, e) for kid, change in changes.items() for e in sorted(change.added)]
    for chunk in chunks(removals):
        await session.execute(
            delete(ContactAddress).where(
                ContactAddress.account_id == account_id,
                tuple_(ContactAddress.kommo_id, ContactAddress.email).in_(chunk),
            )
        )
    await insert_unnest(session, _ADD_ADDRESSES, _ADDRESS_COLUMNS, additions, {"account_id": account_id})


async def upsert_contacts(
    session: AsyncSession, account_id: int, rows: Sequence[ContactRow], *, now: datetime
) -> None:
    constants = {"account_id": account_id, "updated_at": now}
    await insert_unnest(session, _UPSERT_CONTACTS, _CONTACT_COLUMNS, rows, constants)


async def mark_seen(session: AsyncSession, account_id: int, ids: Sequence[int], run_id: str) -> None:
    for chunk in chunks(list(ids)):
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
class Stored:
    version: int
    name: str
    data: dict[str, Any]
    deleted: bool


async def stored_of(session: AsyncSession, account_id: int, ids: Iterable[int]) -> dict[int, Stored]:
    """Each contact's version and values as stored now (a column read: never a stale object of this
    session)."""
    out: dict[int, Stored] = {}
    cols = (Contact.kommo_id, Contact.kommo_updated_at, Contact.name, Contact.data, Contact.deleted_at)
    for chunk in chunks(sorted(set(ids))):
        stmt = select(*cols).where(Contact.account_id == account_id, Contact.kommo_id.in_(chunk))
        for kid, version, name, data, deleted_at in (await session.execute(stmt)).all():
            out[int(kid)] = Stored(int(version), str(name or ""), dict(data or {}), deleted_at is not None)
    return out


async def field_times_of(session: AsyncSession, account_id: int, kommo_id: int) -> dict[str, int] | None:
    """The contact's per-field change times (``app.sync.field_times``; None: not kept for this row)."""
    stmt = select(Contact.field_times).where(Contact.account_id == account_id, Contact.kommo_id == kommo_id)
    times: dict[str, int] | None = (await session.execute(stmt)).scalar_one_or_none()
    return times


async def live_owners(session: AsyncSession, account_id: int, emails: Sequence[str]) -> dict[str, Owner]:
    """Per address, the most recently updated live contact holding it (ties: the higher Kommo id)."""
    best: dict[str, Owner] = {}
    for chunk in chunks(list(emails)):
        stmt = text(_LIVE_HOLDERS).bindparams(account_id=account_id, keys=list(chunk))
        for email, kid, name, upd, tags, data, emails in (await session.execute(stmt)).all():
            cand = Owner(
                int(kid),
                str(name or ""),
                int(upd or 0),
                list(tags or ()),
                dict(data or {}),
                list(emails or ()),
            )
            cur = best.get(email)
            if cur is None or (cand.updated_at, cand.kommo_id) > (cur.updated_at, cur.kommo_id):
                best[str(email)] = cand
    return best


def _live_holdings(account_id: int, column: Any) -> Any:
    """``column`` of the account's addresses held by live contacts (a select to narrow further)."""
    live = and_(Contact.account_id == ContactAddress.account_id, Contact.kommo_id == ContactAddress.kommo_id)
    return (
        select(column)
        .join(Contact, live)
        .where(ContactAddress.account_id == account_id, Contact.deleted_at.is_(None))
    )


async def held_addresses(session: AsyncSession, account_id: int, limit: int) -> list[str]:
    """The first ``limit`` addresses (alphabetically) a live contact holds."""
    stmt = (
        _live_holdings(account_id, ContactAddress.email)
        .group_by(ContactAddress.email)
        .order_by(ContactAddress.email)
        .limit(limit)
    )
    return [str(e) for e in (await session.execute(stmt)).scalars()]


async def owners_holding(session: AsyncSession, account_id: int, email: str) -> list[int]:
    """The live contacts holding ``email``."""
    stmt = _live_holdings(account_id, ContactAddress.kommo_id).where(ContactAddress.email == email)
    return [int(x) for x in (await session.execute(stmt)).scalars()]


async def analyze_mirror(session: AsyncSession) -> None:
    """Refresh PostgreSQL's statistics of the mirror's tables.

    A full sync grows these tables faster than autovacuum re-analyses them (it looks once a minute, after
    10 % growth); with statistics from when an account had a few rows, PostgreSQL plans key lookups as scans
    of the whole account, which get slower with every page.
    """
    await analyze(session, _MIRROR_TABLES)
