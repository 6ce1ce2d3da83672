"""Operator endpoints for full syncs."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.accounts.integrations import require_account
from app.api.deps import AdminDep, ContextDep, SessionDep
from app.api.routing import AppRoute
from app.errors import NotFound
from app.sync import fullsync, runs_repo

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


def _run_out(view: runs_repo.RunView) -> RunOut:
    run = view.run
    end = run.finished_at
    duration = (end - run.started_at).total_seconds() if end and run.started_at else None
    return RunOut(
        run_id=run.id,
        account_id=run.account_id,
        kind=run.kind,
        status=run.status,
        cursor=run.cursor,
        counters=view.counters(),
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_s=duration,
        error=run.error,
        failures=[RunFailureOut(kommo_id=f.kommo_id, reason=f.reason, at=f.at) for f in view.failures],
    )


class RunStarted(BaseModel):
    run_id: str
    status: str
    created: bool = Field(description="False: a run was already going, and this is that one")


class RunList(BaseModel):
    runs: list[RunOut]


@router.post(
    "/sync/contacts",
    status_code=202,
    responses={200: {"description": "A run is already going: that one", "model": RunStarted}},
    summary="Start a full sync (or return the running one)",
)
async def start_sync(
    body: SyncRequest, ctx: ContextDep, session: SessionDep, response: Response
) -> RunStarted:
    integration = await require_account(session, body.id)
    run, created = await fullsync.start_run(session, ctx.queue, integration)
    if not created:
        response.status_code = 200
    return RunStarted(run_id=run.id, status=run.status, created=created)


@router.get("/sync/runs/{run_id}", summary="One sync run: status, counters, cursor, timings, error")
async def get_run(run_id: str, session: SessionDep) -> RunOut:
    views = await runs_repo.run_views(session, run_id=run_id, failures=fullsync.SHOWN_FAILURES)
    if not views:
        raise NotFound(f"No sync run {run_id}.", code="unknown_run")
    return _run_out(views[0])


@router.get("/sync/runs", summary="Recent sync runs, newest first")
async def list_runs(session: SessionDep, account_id: int | None = Query(None, gt=0)) -> RunList:
    views = await runs_repo.run_views(session, account_id=account_id, failures=fullsync.SHOWN_FAILURES)
    return RunList(runs=[_run_out(view) for view in views])
