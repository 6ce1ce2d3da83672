"""Operator endpoints for full syncs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from app.api.deps import AdminDep, ContextDep, SessionDep
from app.api.routing import AppRoute
from app.db.models import Outbox, SyncRun
from app.db.session import after_commit
from app.errors import NotFound, Unprocessable
from app.sync import fullsync
from app.sync import repository as repo
from app.worker import enqueue

router = APIRouter(tags=["sync"], dependencies=[AdminDep], route_class=AppRoute)


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(gt=0, description="Kommo account id")


class RunFailureOut(BaseModel):
    kommo_id: int
    reason: str
    at: datetime


class RunOut(BaseModel):
    run_id: str
    account_id: int
    kind: str
    status: str
    cursor: int | None
    counters: dict[str, int]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    error: str | None
    failures: list[RunFailureOut] = Field(
        default_factory=list,
        description=f"Contacts the run could not apply and went on without (the first {fullsync.SHOWN_FAILURES})",
    )


async def _run_out(session: Any, run: SyncRun) -> RunOut:
    rejected = 0
    if run.started_at is not None:
        stmt = (
            select(func.count())
            .select_from(Outbox)
            .where(
                Outbox.account_id == run.account_id,
                Outbox.status == "rejected",
                Outbox.updated_at >= run.started_at,
            )
        )
        rejected = int((await session.execute(stmt)).scalar_one())
    end = run.finished_at
    duration = (end - run.started_at).total_seconds() if end and run.started_at else None
    failed, failures = await repo.sync_failures(session, run.id, fullsync.SHOWN_FAILURES)
    return RunOut(
        run_id=run.id,
        account_id=run.account_id,
        kind=run.kind,
        status=run.status,
        cursor=run.cursor,
        counters={
            "fetched": run.fetched,
            "changed": run.changed,
            "pushed": run.pushed,
            "rejected": rejected,
            "failed": failed,
        },
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_s=duration,
        error=run.error,
        failures=[RunFailureOut(kommo_id=f.kommo_id, reason=f.reason, at=f.at) for f in failures],
    )


@router.post(
    "/sync/contacts",
    status_code=202,
    responses={200: {"description": "A run is already going: that one"}},
    summary="Start a full sync (or return the running one)",
)
async def start_sync(body: SyncRequest, ctx: ContextDep, session: SessionDep) -> JSONResponse:
    integ = await repo.get_integration(session, body.id)
    if integ is None:
        raise NotFound(f"Account {body.id} is not registered.", code="unknown_account")
    if integ.status != "connected":
        raise Unprocessable(
            f"Account {body.id} is {integ.status}: connect Kommo first "
            "(open the auth_url that POST /integration returns).",
            code="kommo_not_connected",
        )
    run, created = await fullsync.start_run(session, body.id)
    if created:
        run_id = run.id
        after_commit(session, lambda: enqueue.full_sync(ctx.queue, run_id))
    return JSONResponse(
        {"run_id": run.id, "status": run.status, "created": created}, status_code=202 if created else 200
    )


@router.get("/sync/runs/{run_id}", summary="One sync run: status, counters, cursor, timings, error")
async def get_run(run_id: str, session: SessionDep) -> RunOut:
    run = await session.get(SyncRun, run_id)
    if run is None:
        raise NotFound(f"No sync run {run_id}.", code="unknown_run")
    return await _run_out(session, run)


@router.get("/sync/runs", summary="Recent sync runs, newest first")
async def list_runs(
    session: SessionDep, account_id: int | None = Query(None, gt=0)
) -> dict[str, list[RunOut]]:
    runs = await repo.list_runs(session, account_id)
    return {"runs": [await _run_out(session, r) for r in runs]}
