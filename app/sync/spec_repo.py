"""SQL of ``sync_spec`` (an account's spec versions) and ``crm_user`` (the CRM's user names a spec may map)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import CrmUser, SyncSpec
from app.sync.spec import StoredSpec, default_spec


async def current_spec(session: AsyncSession, account_id: int) -> tuple[int, StoredSpec]:
    """The spec in force and its version; an account without one (created before any was stored) has the
    default spec as version 0."""
    stmt = (
        select(SyncSpec.version, SyncSpec.spec)
        .where(SyncSpec.account_id == account_id)
        .order_by(SyncSpec.version.desc())
        .limit(1)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return 0, default_spec()
    return int(row[0]), StoredSpec.model_validate(row[1])


async def store_spec(session: AsyncSession, account_id: int, spec: StoredSpec) -> int:
    """Store ``spec`` as the account's next version (the caller holds the account lock); returns it."""
    stmt = select(func.coalesce(func.max(SyncSpec.version), 0)).where(SyncSpec.account_id == account_id)
    version = int((await session.execute(stmt)).scalar_one()) + 1
    session.add(SyncSpec(account_id=account_id, version=version, spec=spec.model_dump(mode="json")))
    await session.flush()
    return version


async def ensure_default_spec(session: AsyncSession, account_id: int) -> None:
    """A new account starts with the default spec as version 1 (a no-op when it has one)."""
    stmt = (
        insert(SyncSpec)
        .values(
            account_id=account_id, version=1, spec=default_spec().model_dump(mode="json"), created_at=utcnow()
        )
        .on_conflict_do_nothing()
    )
    exists = select(SyncSpec.version).where(SyncSpec.account_id == account_id).limit(1)
    if (await session.execute(exists)).first() is None:
        await session.execute(stmt)


async def user_names(session: AsyncSession, account_id: int) -> dict[int, str]:
    stmt = select(CrmUser.user_id, CrmUser.name).where(CrmUser.account_id == account_id)
    return {int(uid): str(name) for uid, name in (await session.execute(stmt)).all()}


async def replace_users(session: AsyncSession, account_id: int, users: Mapping[int, str]) -> bool:
    """Store the CRM's users of the account as just read; True when a name changed, appeared or went."""
    before = await user_names(session, account_id)
    if before == dict(users):
        return False
    await session.execute(delete(CrmUser).where(CrmUser.account_id == account_id))
    now = utcnow()
    session.add_all(
        CrmUser(account_id=account_id, user_id=uid, name=name, refreshed_at=now)
        for uid, name in users.items()
    )
    await session.flush()
    return True
