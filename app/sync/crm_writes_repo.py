"""SQL of two-way fields: ``crm_write`` (values to write into the CRM), and the two places a value that came
back from the email platform is recorded: what the platform holds (``outbox.pushed_payload``, or for the
fields it owns ``outbox.platform_values``) and, when the platform's value won, our copy of the CRM contact
(``contact``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Contact, CrmWrite, Outbox
from app.db.states import CrmWriteState, OutboxStatus
from app.sync import field_times
from app.sync.held import held_state, platform_entry
from app.sync.mapping import OUTCOME_UNKNOWN, payload_hash
from app.sync.outbox_repo import HeldRow
from app.sync.spec import PHONE_TARGET, SourceKind, SourceRef


@dataclass(frozen=True, slots=True)
class NewWrite:
    kommo_id: int
    email: str
    source: str
    field_type: str
    target: str
    value: str
    unisender_at: datetime
    state: CrmWriteState = CrmWriteState.PENDING
    last_error: str | None = None
    crm_before: str | None = None  # the CRM's value of the source it won over (app.sync.field_times)


def source_key(ref: SourceRef) -> str:
    """How ``crm_write.source`` names a source: its kind, a custom field with its id."""
    return f"custom_field:{ref.field_id}" if ref.kind is SourceKind.CUSTOM_FIELD else ref.kind.value


async def add_write(session: AsyncSession, account_id: int, write: NewWrite, *, at: datetime) -> None:
    handled = None if write.state is CrmWriteState.PENDING else at
    session.add(
        CrmWrite(
            account_id=account_id,
            kommo_id=write.kommo_id,
            email=write.email,
            source=write.source,
            field_type=write.field_type,
            target=write.target,
            value=write.value,
            unisender_at=write.unisender_at,
            state=write.state,
            last_error=write.last_error,
            crm_before=write.crm_before,
            created_at=at,
            handled_at=handled,
        )
    )
    await session.flush()


async def pending_writes(session: AsyncSession, account_id: int, limit: int) -> list[CrmWrite]:
    """The account's pending writes, oldest first, locked (a second writer skips them)."""
    stmt = (
        select(CrmWrite)
        .where(CrmWrite.account_id == account_id, CrmWrite.state == CrmWriteState.PENDING)
        .order_by(CrmWrite.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def unconfirmed_values(
    session: AsyncSession, account_id: int, kommo_ids: Sequence[int], written: Sequence[int]
) -> list[CrmWrite]:
    """Per contact and source, the latest platform value the CRM's webhooks have not confirmed yet: a pending
    row, or one of ``written`` (rows this transaction wrote)."""
    unconfirmed = (CrmWrite.state == CrmWriteState.PENDING) | CrmWrite.id.in_(list(written))
    stmt = (
        select(CrmWrite)
        .where(CrmWrite.account_id == account_id, CrmWrite.kommo_id.in_(kommo_ids), unconfirmed)
        .order_by(CrmWrite.unisender_at, CrmWrite.id)
    )
    latest: dict[tuple[int, str], CrmWrite] = {}
    for row in (await session.execute(stmt)).scalars():
        latest[(row.kommo_id, row.source)] = row
    return list(latest.values())


async def contacts_with_pending_writes(
    session: AsyncSession, account_id: int, kommo_ids: set[int]
) -> set[int]:
    """Those of ``kommo_ids`` with a platform value still waiting to be written to them."""
    stmt = select(CrmWrite.kommo_id).where(
        CrmWrite.account_id == account_id,
        CrmWrite.kommo_id.in_(sorted(kommo_ids)),
        CrmWrite.state == CrmWriteState.PENDING,
    )
    return {int(k) for k in (await session.execute(stmt)).scalars()}


async def accounts_with_pending_writes(session: AsyncSession) -> list[int]:
    stmt = select(CrmWrite.account_id).where(CrmWrite.state == CrmWriteState.PENDING).distinct()
    return [int(a) for a in (await session.execute(stmt)).scalars()]


async def has_pending_writes(session: AsyncSession, account_id: int) -> bool:
    pending = (CrmWrite.account_id == account_id) & (CrmWrite.state == CrmWriteState.PENDING)
    return bool((await session.execute(select(exists().where(pending)))).scalar())


async def record_held_value(
    session: AsyncSession, row: HeldRow, target: str, value: str, *, owned: bool = False, at: int = 0
) -> None:
    """The platform now holds ``value`` in ``target`` for this address (its own change): a desire equal to
    what it holds sends nothing, so neither our echo nor the CRM's echo of our write is pushed back. A target
    we push is recorded in the push record (``pushed_payload``, when there is one); a target the platform
    ``owned`` (a ``to_kommo`` rule's) in ``platform_values``, which no push replaces. Either way the other
    place loses the target, so the one that holds it is the latest (``app.sync.held.held_value``). ``at``:
    when the platform set it (epoch seconds), so that an older report of an owned field is told apart."""
    pushed = _held(row.pushed_payload)
    kept = dict(row.platform_values or {})
    if owned:
        kept[target] = platform_entry(value, at)
    else:
        kept.pop(target, None)
    values: dict[str, Any] = {"platform_values": kept or None}
    if pushed is not None:
        fields = dict(pushed.get("fields") or {})
        payload = {**pushed, "fields": fields}
        if target == PHONE_TARGET:  # the phone's own slot (``desired``'s ``phone``)
            payload["phone"] = "" if owned else value
        elif owned:
            fields.pop(target, None)
        else:
            fields[target] = value
        # After a push of unknown outcome the record stays unknown: the platform's report names one field.
        unknown = row.pushed_hash == OUTCOME_UNKNOWN
        values.update(
            pushed_payload=payload, pushed_hash=OUTCOME_UNKNOWN if unknown else payload_hash(payload)
        )
    elif not owned:
        return  # nothing pushed yet: no record to correct
    await session.execute(
        update(Outbox)
        .where(Outbox.id == row.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _held(pushed: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if not pushed or pushed.get("delete") else pushed


async def set_contact_value(
    session: AsyncSession, account_id: int, kommo_id: int, ref: SourceRef, text: str, *, changed_at: int
) -> None:
    """Our copy of the contact takes the value written into the CRM now, before the CRM's webhook brings it:
    every address the contact owns derives it at once (Kommo's webhooks never carry first and last names).
    The field's change time becomes ``changed_at`` (the platform's change): the CRM's webhook for our write
    brings the same value back, which changes nothing, so a later platform change is judged against this."""
    where = (Contact.account_id == account_id) & (Contact.kommo_id == kommo_id)
    row = (
        await session.execute(
            select(Contact.data, Contact.field_times, Contact.kommo_updated_at).where(where)
        )
    ).one_or_none()
    if row is None:
        return
    current, held_times, version = row
    valid = held_times is not None and field_times.valid(held_times, int(version))
    times = dict(held_times) if held_times is not None and valid else field_times.first(int(version))
    times[source_key(ref)] = changed_at
    if ref.kind is SourceKind.NAME:
        stmt = update(Contact).where(where).values(name=text, field_times=times)
    else:
        data = dict(current or {})
        if ref.kind is SourceKind.CUSTOM_FIELD:
            fields = dict(data.get("fields") or {})
            if text:
                fields[str(ref.field_id)] = [text]
            else:
                fields.pop(str(ref.field_id), None)
            data["fields"] = fields
        else:
            data[ref.kind.value] = text
        stmt = update(Contact).where(where).values(data=data, field_times=times)
    await session.execute(stmt.execution_options(synchronize_session=False))


async def finish(
    session: AsyncSession, ids: Sequence[int], state: CrmWriteState, at: datetime, error: str | None = None
) -> None:
    if not ids:
        return
    await session.execute(
        update(CrmWrite)
        .where(CrmWrite.id.in_(list(ids)))
        .values(state=state, handled_at=at, last_error=error)
        .execution_options(synchronize_session=False)
    )


async def pushed_before(
    session: AsyncSession, account_id: int, emails: Sequence[str], before: datetime
) -> dict[str, dict[str, Any]]:
    """Per address, the user fields the platform accepted from us last and those it owns as we recorded them
    (``platform_values``; a push record's own entry is the later), when that push was before ``before`` (a push
    accepted later may postdate what an export taken at ``before`` shows) and was not a deletion. Not while a
    desire waits to be pushed: a CRM change may be on its way over the platform's value, and an export tells
    no time to judge the two by (the next run, after the push, compares again)."""
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(emails), 1000):
        stmt = select(Outbox.email, Outbox.pushed_payload, Outbox.platform_values).where(
            Outbox.account_id == account_id,
            Outbox.email.in_(list(emails[start : start + 1000])),
            Outbox.pushed_at < before,
            Outbox.status != OutboxStatus.PENDING,
            Outbox.pushed_hash != OUTCOME_UNKNOWN,  # what the platform holds is unknown: nothing to compare
        )
        for email, payload, kept in (await session.execute(stmt)).all():
            held = held_state(payload, kept)
            if held and not held.get("delete"):
                values = {**(held.get("kept") or {}), **(held.get("fields") or {})}
                if held.get("phone"):  # the phone's own slot (a ``both`` rule's phone lives there)
                    values[PHONE_TARGET] = held["phone"]
                out[str(email)] = values
    return out


async def has_due_outbox(session: AsyncSession, account_id: int) -> bool:
    due = (Outbox.account_id == account_id) & (Outbox.status == OutboxStatus.PENDING)
    return bool((await session.execute(select(exists().where(due)))).scalar())
