"""A run's lease on the real database (each test inside a rolled-back transaction): a slice that lost the run to
another must not count its failure on the run, nor fail it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import SyncRun
from app.db.states import RunStatus
from app.sync import runs_repo


async def _run(session: AsyncSession, owner: str | None, lease_for: float) -> str:
    run_id = str(uuid.uuid4())
    expires = utcnow() + timedelta(seconds=lease_for) if owner is not None else None
    session.add(
        SyncRun(
            id=run_id, account_id=1, status=RunStatus.RUNNING, lease_owner=owner, lease_expires_at=expires
        )
    )
    await session.flush()
    return run_id


async def _status(session: AsyncSession, run_id: str) -> tuple[RunStatus, int]:
    stmt = select(SyncRun.status, SyncRun.slice_failures).where(SyncRun.id == run_id)
    status, failures = (await session.execute(stmt)).one()
    return status, failures


async def test_a_slice_that_lost_the_lease_neither_counts_nor_fails_the_run(session: AsyncSession) -> None:
    run_id = await _run(session, "slice-new", lease_for=60)
    assert await runs_repo.count_slice_failure(session, run_id, "boom", "slice-old") == 0
    await runs_repo.fail_run(session, run_id, "boom", "slice-old")
    assert await _status(session, run_id) == (RunStatus.RUNNING, 0)

    assert await runs_repo.count_slice_failure(session, run_id, "boom", "slice-new") == 1
    await runs_repo.fail_run(session, run_id, "boom", "slice-new")
    assert await _status(session, run_id) == (RunStatus.FAILED, 1)


async def test_a_lapsed_or_free_lease_lets_any_slice_fail_the_run(session: AsyncSession) -> None:
    lapsed = await _run(session, "slice-dead", lease_for=-5)
    await runs_repo.fail_run(session, lapsed, "boom", "slice-other")
    free = await _run(session, None, lease_for=0)
    assert await runs_repo.count_slice_failure(session, free, "boom", "slice-other") == 1
    assert await _status(session, lapsed) == (RunStatus.FAILED, 0)
