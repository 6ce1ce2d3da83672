"""What the console's pages show, assembled from the services the operator API uses (account views, runs,
campaigns, activity), plus each account's lag and a health badge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import views as account_views
from app.accounts.schemas import AccountView
from app.console import deadletters_section
from app.console import repository as repo
from app.db.base import utcnow
from app.db.models import Integration
from app.db.states import IntegrationStatus, RunStatus
from app.deadletters.schemas import DeadLetterPage
from app.sync import activity_repo, campaigns, fullsync, runs_repo

LAG_WARN_SECONDS = 60.0
TOKEN_WARN = timedelta(hours=1)
RECENT_ERROR = timedelta(hours=1)
RECENT_RUNS = 10


@dataclass(frozen=True, slots=True)
class Health:
    level: str  # ok | warn | bad: the badge's colour and its word
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class AccountRow:
    view: AccountView
    lag_s: float | None  # age of the oldest pending webhook event; None when nothing waits
    dead_letters: int
    health: Health

    @property
    def pending(self) -> int:
        return self.view.outbox.pending + self.view.events_pending


def health_of(view: AccountView, lag_s: float | None, dead_letters: int, now: datetime) -> Health:
    """Bad: the account cannot sync (not connected, re-auth needed, disabled) or holds dead letters (failed
    events, exhausted rows). Warn: it lags, Unisender refused rows, the Kommo token is about to lapse, or an error
    was recorded in the last hour. Else ok."""
    bad: list[str] = []
    warn: list[str] = []
    if view.status is IntegrationStatus.NEEDS_REAUTH:
        bad.append("Kommo needs re-authorisation")
    elif view.status is IntegrationStatus.DISABLED:
        bad.append("integration disabled in Kommo")
    elif not view.kommo.connected:
        bad.append("Kommo not connected")
    if not view.unisender.connected:
        bad.append("Unisender not connected")
    # Rows Unisender refused are dead letters too, but a warning: it said why, and the rest flows.
    others = dead_letters - view.outbox.rejected
    if others > 0:
        bad.append(f"{others} dead letter{'' if others == 1 else 's'} besides Unisender's refusals")
    if lag_s is not None and lag_s > LAG_WARN_SECONDS:
        warn.append(f"lagging {lag_s:.0f} s")
    if view.outbox.rejected:
        warn.append(f"{view.outbox.rejected} rejected by Unisender")
    expires = view.kommo.token_expires_at
    if view.kommo.connected and expires is not None and expires - now < TOKEN_WARN:
        warn.append("Kommo token expires within the hour")
    if view.last_error_at is not None and now - view.last_error_at < RECENT_ERROR:
        warn.append("an error in the last hour")
    if bad:
        return Health("bad", bad + warn)
    if warn:
        return Health("warn", warn)
    return Health("ok", [])


async def overview(session: AsyncSession) -> list[AccountRow]:
    found = await account_views.list_accounts(session=session)
    return await _rows(session, found)


async def _rows(session: AsyncSession, found: list[AccountView]) -> list[AccountRow]:
    now = utcnow()
    ids = [v.account_id for v in found]
    oldest = await repo.oldest_pending_events(session, ids)
    dead = await deadletters_section.totals(session, ids)
    rows = []
    for view in found:
        since = oldest.get(view.account_id)
        lag = None if since is None else max(0.0, (now - since).total_seconds())
        n = dead.get(view.account_id, 0)
        rows.append(AccountRow(view, lag, n, health_of(view, lag, n, now)))
    return rows


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    kind: str
    status: str
    active: bool
    counters: dict[str, int]
    created_at: datetime
    finished_at: datetime | None
    error: str | None


def run_row(view: runs_repo.RunView) -> RunRow:
    run = view.run
    return RunRow(
        run_id=run.id,
        kind=str(run.kind),
        status=str(run.status),
        active=run.status in RunStatus.active(),
        counters=view.counters(),
        created_at=run.created_at,
        finished_at=run.finished_at,
        error=run.error,
    )


def run_json(row: RunRow) -> dict[str, Any]:
    """What the detail page's script polls: enough to redraw a run's row."""
    return {
        "run_id": row.run_id,
        "kind": row.kind,
        "status": row.status,
        "active": row.active,
        "counters": row.counters,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "error": row.error,
    }


async def run_rows(
    session: AsyncSession, *, account_id: int | None = None, run_id: str | None = None
) -> list[RunRow]:
    views = await runs_repo.run_views(
        session, account_id=account_id, run_id=run_id, limit=RECENT_RUNS, failures=fullsync.SHOWN_FAILURES
    )
    return [run_row(v) for v in views]


@dataclass
class Detail:
    row: AccountRow
    runs: list[RunRow]
    activity: dict[str, dict[str, int]]
    campaigns: list[campaigns.CampaignView]
    dead_letters: DeadLetterPage


async def detail(session: AsyncSession, integration: Integration) -> Detail:
    view = await account_views.account_view(session=session, integration=integration)
    (row,) = await _rows(session, [view])
    aid = integration.account_id
    return Detail(
        row=row,
        runs=await run_rows(session, account_id=aid),
        activity=await activity_repo.activity_counts(session, aid),
        campaigns=await campaigns.campaign_views(session, aid),
        dead_letters=await deadletters_section.listed(session, aid),
    )
