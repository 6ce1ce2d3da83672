"""The mirror's rule for a discarded outbox row (``app.sync.service.recompute``): the outbox holds one row per
address, so a discarded row is never replaced; like a rejected one, it stays as it is for the same desire and
is pending again for a different one."""

from __future__ import annotations

from sqlalchemy import select

from app.connectors.base import CrmContact
from app.context import ProcessContext
from app.db.locks import account_lock
from app.db.models import Integration, Outbox
from app.db.states import IntegrationStatus, OutboxStatus
from app.deadletters import service as deadletters
from app.deadletters.schemas import Selection
from app.sync import service

EMAIL = "ann@example.com"


async def connected_account(pc: ProcessContext, account_id: int) -> int:
    async with pc.db.session_scope() as session:
        session.add(
            Integration(
                account_id=account_id,
                subdomain=f"acme{account_id}",
                client_id=f"client-{account_id}",
                client_secret="client-secret",
                redirect_uri="http://127.0.0.1:1/auth/callback",
                webhook_token_hash="0" * 64,
                status=IntegrationStatus.CONNECTED,
            )
        )
    return account_id


async def _status(pc: ProcessContext) -> tuple[OutboxStatus, int]:
    async with pc.db.session_scope() as session:
        row = (
            await session.execute(select(Outbox.status, Outbox.attempts).where(Outbox.email == EMAIL))
        ).one()
    return row[0], row[1]


async def _apply(pc: ProcessContext, account_id: int, name: str, updated_at: int) -> service.RecomputeResult:
    async with pc.db.session_scope() as session:
        await account_lock(session, account_id)
        contact = CrmContact(id=7, name=name, updated_at=updated_at, emails=(EMAIL,))
        applied = await service.apply_contacts(session, account_id, [contact])
        return await service.recompute(session, account_id, applied.affected)


async def test_same_desire_leaves_a_discarded_row_a_new_one_revives_it(ctx: ProcessContext) -> None:
    account_id = await connected_account(ctx, 41)
    await _apply(ctx, account_id, "Ann", 1000)
    async with ctx.db.session_scope() as session:
        row = (await session.execute(select(Outbox).where(Outbox.email == EMAIL))).scalar_one()
        row.status, row.attempts, row.last_error = OutboxStatus.DISCARDED, 3, "given up"
    # The same desire again (a version that changes nothing the spec maps): left discarded.
    same = await _apply(ctx, account_id, "Ann", 1001)
    assert (same.queued, same.unchanged) == (0, 1)
    assert await _status(ctx) == (OutboxStatus.DISCARDED, 3)
    # A different desire: the row is pending again, attempts forgotten.
    new = await _apply(ctx, account_id, "Ann Smith", 1002)
    assert new.queued == 1
    assert await _status(ctx) == (OutboxStatus.PENDING, 0)


async def test_a_replayed_row_to_push_is_bulk_work_behind_live_changes(ctx: ProcessContext) -> None:
    """A replay re-derives the row as any change, then queues it as bulk: the outbox's live rows are claimed
    first and its push waits behind live callers for the platform's budget."""
    account_id = await connected_account(ctx, 42)
    await _apply(ctx, account_id, "Ann", 1000)
    async with ctx.db.session_scope() as session:
        row = (await session.execute(select(Outbox).where(Outbox.email == EMAIL))).scalar_one()
        row.status, row.attempts, row.last_error = OutboxStatus.DEAD, 5, "timed out five times"
        dead_id = row.id
    async with ctx.db.session_scope() as session:
        done = await deadletters.replay(
            session, ctx.queue, account_id, Selection.of_ids([f"outbox:{dead_id}"]), actor="operator"
        )
    assert done.affected == 1
    async with ctx.db.session_scope() as session:
        row = (await session.execute(select(Outbox).where(Outbox.email == EMAIL))).scalar_one()
        assert (row.status, row.attempts, row.bulk) == (OutboxStatus.PENDING, 0, True)
    # A live change of the same address afterwards is live again.
    await _apply(ctx, account_id, "Ann Smith", 1001)
    async with ctx.db.session_scope() as session:
        row = (await session.execute(select(Outbox).where(Outbox.email == EMAIL))).scalar_one()
        assert (row.status, row.bulk) == (OutboxStatus.PENDING, False)
