"""SQL of full-sync runs: ``sync_run`` (progress, checkpoint cursor, the lease of the slice advancing it) and
``sync_failure`` (the contacts a run could not apply)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Outbox, SyncFailure, SyncRun
from app.db.states import OutboxStatus, RunKind, RunStatus


@dataclass(frozen=True, slots=True)
class RunView:
    """A run with what operators see of it besides its own columns."""

    run: SyncRun
    rejected: int  # outbox rows of the account the email platform refused since the run started
    failed: int  # contacts the run could not apply
    failures: list[SyncFailure]  # the first of those, by CRM id

    def counters(self) -> dict[str, int]:
        """The run's counters as operators read them (API, console, CLI)."""
        run = self.run
        return {
            "fetched": run.fetched,
            "changed": run.changed,
            "pushed": run.pushed,
            "rejected": self.rejected,
            "failed": self.failed,
        }


async def active_run(session: AsyncSession, account_id: int, kind: RunKind = RunKind.FULL) -> SyncRun | None:
    stmt = (
        select(SyncRun)
        .where(SyncRun.account_id == account_id, SyncRun.kind == kind, SyncRun.status.in_(RunStatus.active()))
        .order_by(SyncRun.created_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def run_kind(session: AsyncSession, run_id: str) -> RunKind | None:
    value = (await session.execute(select(SyncRun.kind).where(SyncRun.id == run_id))).scalar_one_or_none()
    return None if value is None else RunKind(value)


async def orphaned_runs(session: AsyncSession, idle: float) -> list[SyncRun]:
    """Unfinished runs no live job advances: their lease expired (the slice holding it died), or nobody has
    held one for ``idle`` seconds (a continuation whose enqueue was lost)."""
    now = utcnow()
    stmt = select(SyncRun).where(
        SyncRun.status.in_(RunStatus.active()),
        or_(
            SyncRun.lease_expires_at < now,
            and_(SyncRun.lease_expires_at.is_(None), SyncRun.updated_at < now - timedelta(seconds=idle)),
        ),
    )
    return list((await session.execute(stmt)).scalars())


async def claim_run(session: AsyncSession, run_id: str, owner: str, until: datetime) -> bool:
    """Take the run's lease for ``owner`` until ``until``: atomically, and only if nobody else holds a live one
    (``owner`` may hold it already: a retried job keeps its id). False when another slice holds it or the run
    is finished."""
    now = utcnow()
    result = await session.execute(
        update(SyncRun)
        .where(
            SyncRun.id == run_id,
            SyncRun.status.in_(RunStatus.active()),
            ours_or_free(owner, now),
        )
        .values(lease_owner=owner, lease_expires_at=until, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def extend_lease(session: AsyncSession, run_id: str, owner: str, until: datetime) -> bool:
    """Renew ``owner``'s lease (the run's ``updated_at`` too); False when it holds it no more."""
    result = await session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.lease_owner == owner, SyncRun.status.in_(RunStatus.active()))
        .values(lease_expires_at=until, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_lease(session: AsyncSession, run_id: str, owner: str) -> None:
    await session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def held_run(session: AsyncSession, run_id: str, owner: str) -> SyncRun | None:
    """The run, locked until the transaction ends, if it is running and ``owner`` holds its lease: a slice
    that lost its lease (it stalled past the expiry and another took over) must not advance the run."""
    stmt = select(SyncRun).where(SyncRun.id == run_id).with_for_update()
    run = (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()
    if run is None or run.status != RunStatus.RUNNING or run.lease_owner != owner:
        return None
    return run


def ours_or_free(owner: str, now: datetime) -> Any:
    """The run's lease is ``owner``'s, nobody's, or lapsed: a slice that lost it to another must not fail or
    charge the run that one is advancing."""
    return or_(SyncRun.lease_owner.is_(None), SyncRun.lease_owner == owner, SyncRun.lease_expires_at < now)


async def count_slice_failure(session: AsyncSession, run_id: str, reason: str, owner: str) -> int:
    """Record that ``owner``'s slice of an unfinished run failed; returns the failures in a row (0: the run is
    finished, or another slice holds it)."""
    now = utcnow()
    stmt = (
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.status.in_(RunStatus.active()), ours_or_free(owner, now))
        .values(slice_failures=SyncRun.slice_failures + 1, error=reason, updated_at=now)
        .returning(SyncRun.slice_failures)
    )
    value = (await session.execute(stmt)).scalar_one_or_none()
    return int(value or 0)


async def fail_run(session: AsyncSession, run_id: str, error: str, owner: str) -> None:
    """End an unfinished run ``failed`` with ``error``, if its lease is ``owner``'s, nobody's or lapsed."""
    now = utcnow()
    await session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id, SyncRun.status.in_(RunStatus.active()), ours_or_free(owner, now))
        .values(
            status=RunStatus.FAILED,
            error=error[:1000],
            finished_at=now,
            updated_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )


async def record_sync_failure(session: AsyncSession, run_id: str, kommo_id: int, reason: str) -> None:
    """A contact the run could not apply (once per run and contact: a page read again records it again)."""
    stmt = insert(SyncFailure).values(run_id=run_id, kommo_id=kommo_id, reason=reason, at=utcnow())
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["run_id", "kommo_id"], set_={"reason": reason, "at": utcnow()}
        )
    )


async def run_views(
    session: AsyncSession,
    *,
    run_id: str | None = None,
    account_id: int | None = None,
    limit: int = 50,
    failures: int = 100,
) -> list[RunView]:
    """Runs newest first (the one ``run_id``, or the latest ``limit``, of ``account_id`` when given) with their
    counts and first ``failures`` failures: two queries, whatever the number of runs."""
    rejected = (
        select(func.count())
        .where(
            Outbox.account_id == SyncRun.account_id,
            Outbox.status == OutboxStatus.REJECTED,
            Outbox.updated_at >= SyncRun.started_at,  # NULL (not started yet): nothing counted
        )
        .scalar_subquery()
    )
    failed = select(func.count()).where(SyncFailure.run_id == SyncRun.id).scalar_subquery()
    stmt = select(SyncRun, rejected, failed).order_by(SyncRun.created_at.desc()).limit(limit)
    if run_id is not None:
        stmt = stmt.where(SyncRun.id == run_id)
    if account_id is not None:
        stmt = stmt.where(SyncRun.account_id == account_id)
    rows = [(run, int(r), int(f)) for run, r, f in (await session.execute(stmt)).all()]
    listed = await _first_failures(session, [run.id for run, _, f in rows if f], failures)
    return [RunView(run, r, f, listed.get(run.id, [])) for run, r, f in rows]


async def _first_failures(
    session: AsyncSession, run_ids: list[str], limit: int
) -> dict[str, list[SyncFailure]]:
    if not run_ids:
        return {}
    ranked = (
        select(
            SyncFailure.run_id,
            SyncFailure.kommo_id,
            func.row_number()
            .over(partition_by=SyncFailure.run_id, order_by=SyncFailure.kommo_id)
            .label("rn"),
        )
        .where(SyncFailure.run_id.in_(run_ids))
        .subquery()
    )
    stmt = (
        select(SyncFailure)
        .join(ranked, and_(ranked.c.run_id == SyncFailure.run_id, ranked.c.kommo_id == SyncFailure.kommo_id))
        .where(ranked.c.rn <= limit)
        .order_by(SyncFailure.run_id, SyncFailure.kommo_id)
    )
    out: dict[str, list[SyncFailure]] = {}
    for failure in (await session.execute(stmt)).scalars():
        out.setdefault(failure.run_id, []).append(failure)
    return out
