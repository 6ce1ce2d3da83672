"""SQL of ``campaign``: the campaigns the email platform sent for an account, as last read from it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Campaign


async def names(session: AsyncSession, account_id: int, ids: Iterable[int]) -> dict[int, str]:
    """The subjects of the campaigns we know among ``ids`` (blank subjects left out)."""
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    stmt = select(Campaign.campaign_id, Campaign.subject).where(
        Campaign.account_id == account_id, Campaign.campaign_id.in_(wanted)
    )
    return {int(cid): str(subject) for cid, subject in (await session.execute(stmt)).all() if subject}


async def campaigns(session: AsyncSession, account_id: int) -> list[Campaign]:
    stmt = (
        select(Campaign)
        .where(Campaign.account_id == account_id)
        .order_by(Campaign.started_at.desc().nulls_last(), Campaign.campaign_id.desc())
    )
    return list((await session.execute(stmt)).scalars())


async def save_campaigns(session: AsyncSession, account_id: int, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert campaigns as read (keys: campaign_id, subject, list_id, status, started_at, stats)."""
    now = utcnow()
    for row in rows:
        values: dict[str, Any] = {**row, "account_id": account_id, "refreshed_at": now}
        stmt = insert(Campaign).values(**values)
        update = {k: stmt.excluded[k] for k in values if k not in ("account_id", "campaign_id")}
        if row.get("stats") is None:
            update.pop("stats", None)  # a read without totals keeps the ones we had
        await session.execute(
            stmt.on_conflict_do_update(index_elements=["account_id", "campaign_id"], set_=update)
        )
