"""Named locks held until the end of the current transaction: PostgreSQL advisory locks, shared by every
process of the service (API, workers, CLI commands)."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock`` (the same in every process and release)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def xact_lock(session: AsyncSession, name: str, *, wait: bool = True) -> bool:
    """Take the lock ``name`` until the session's transaction ends; with ``wait=False``, return False at once
    when another transaction holds it."""
    if wait:
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
        return True
    got = (
        await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)})
    ).scalar()
    return bool(got)


async def account_lock(session: AsyncSession, account_id: int, *, wait: bool = True) -> bool:
    """Serialise the mirror's writes for one account until the transaction ends.

    Recomputing an address's desired state reads every contact that holds it; two transactions doing that
    at once for the same account could each miss the other's change.
    """
    return await xact_lock(session, f"mirror:{account_id}", wait=wait)


async def tagging_lock(session: AsyncSession, account_id: int, *, wait: bool = True) -> bool:
    """The account's write-back of stops and list unsubscribes to the CRM (one tagging round at a time, and a
    new holder of a stopped address marked due only between rounds)."""
    return await xact_lock(session, f"tags:{account_id}", wait=wait)


async def flush_lock(session: AsyncSession, account_id: int, lane: int = 0) -> bool:
    """One pusher per lane of the account's outbox at a time: False at once when another transaction pushes
    in that lane (lane 0 is the only one of live flushes; a backlog adds others)."""
    name = f"flush:{account_id}" if lane == 0 else f"flush:{account_id}:{lane}"
    return await xact_lock(session, name, wait=False)
