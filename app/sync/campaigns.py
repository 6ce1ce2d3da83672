"""The campaigns the email platform sent to an account's lists, cached in ``campaign``: their subjects name
the campaign in the CRM notes (``app.sync.activity``), their totals are the account's campaigns view.

- ``refresh_campaigns`` (cron every 10 minutes, per account; and queued after an on-demand lookup): the
  campaigns started within ``LOOKBACK`` sent to a list the account uses (its base list and its spec's
  lists), each with its common stats plus the bounces counted from its delivery stats.
- ``names_of_unknown`` (the notes job, once per job): campaign ids the notes meet that the cache does not
  name are looked up in the campaign list only (no stats: the notes wait on it), saved, and a full refresh
  is queued for their totals.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.accounts.errors import AccountNotReady, UnknownAccount
from app.connectors.base import ActivityKind
from app.connectors.errors import ConnectorError
from app.connectors.unisender.client import UnisenderClient
from app.connectors.unisender.reports import CampaignInfo
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import EspAccount
from app.db.states import IntegrationStatus
from app.queue import enqueue
from app.sync import campaigns_repo, providers, spec_repo
from app.sync.spec import StoredSpec

log = structlog.get_logger(__name__)

PAGE = 100  # getCampaigns' largest page
MAX_PAGES = 20  # 2,000 campaigns per read; more within LOOKBACK is logged as truncated
LOOKBACK = timedelta(days=90)  # older campaigns are not re-read: their totals have settled
# Bounces are counted from every recipient's row (one getCampaignDeliveryStats table per campaign: 100k rows
# for a 100k-address campaign), so they are re-read only until a read after BOUNCE_WINDOW past the start
# (retries of soft bounces are over by then); opens and clicks (common stats, one small call) always.
BOUNCE_WINDOW = timedelta(days=3)
# A refresh runs inside a job of the worker's ~60 s timeout; an async delivery-stats task may take a while.
READ_BUDGET_SECONDS = 40.0
TASK_POLL_SECONDS = 1.0
TASK_MAX_POLLS = 10
MISS_TTL_SECONDS = 600.0  # an id not found is not looked up again by this process for this long
_BOUNCES = frozenset({ActivityKind.HARD_BOUNCE, ActivityKind.SOFT_BOUNCE})
# Ids looked up and not found: (account, campaign) -> monotonic time until which they are not looked up
# again. Activity for a campaign older than LOOKBACK would otherwise cost a campaign-list read per notes job.
_MISSED: dict[tuple[int, int], float] = {}


@dataclass
class RefreshResult:
    campaigns: int = 0  # saved
    failed: int = 0  # campaigns whose stats could not be read (the previous totals are kept)
    truncated: bool = False  # more than MAX_PAGES pages of campaigns within LOOKBACK


@dataclass(frozen=True, slots=True)
class _Cached:
    stats: dict[str, Any] | None
    started_at: datetime | None
    refreshed_at: datetime


class CampaignView(BaseModel):
    """One campaign as last read; the totals are null until its stats were read once."""

    campaign_id: int
    subject: str
    list_id: int | None
    status: str | None
    started_at: datetime | None
    sent: int | None
    delivered: int | None
    opened: int | None  # contacts that opened or clicked (the platform's read_unique)
    clicked: int | None
    bounced: int | None  # recipients whose letter hard- or soft-bounced
    unsubscribed: int | None
    complained: int | None  # marked as spam
    refreshed_at: datetime


async def campaign_views(session: AsyncSession, account_id: int) -> list[CampaignView]:
    """The cached campaigns of the account, newest first."""
    out: list[CampaignView] = []
    for c in await campaigns_repo.campaigns(session, account_id):
        stats = c.stats or {}
        out.append(
            CampaignView(
                campaign_id=c.campaign_id,
                subject=c.subject,
                list_id=c.list_id,
                status=c.status,
                started_at=c.started_at,
                refreshed_at=c.refreshed_at,
                **{k: stats.get(k) for k in _STAT_KEYS},
            )
        )
    return out


_STAT_KEYS = ("sent", "delivered", "opened", "clicked", "bounced", "unsubscribed", "complained")


async def refresh_campaigns(pc: ProcessContext, account_id: int) -> RefreshResult:
    """Read the account's recent campaigns to its lists and their totals into the cache. Raises the
    connector's errors of the campaign list read; a campaign whose stats fail keeps its previous totals."""
    result = RefreshResult()
    async with pc.db.session_scope() as session:
        integ = await accounts_repo.get_integration(session, account_id)
        if integ is None or integ.status != IntegrationStatus.CONNECTED:
            return result
        client, esp = await providers.esp_reports_client(session, pc, account_id)
        _, spec = await spec_repo.current_spec(session, account_id)
        cached = {
            c.campaign_id: _Cached(c.stats, c.started_at, c.refreshed_at)
            for c in await campaigns_repo.campaigns(session, account_id)
        }
    lists = _lists(esp, spec)
    infos, result.truncated = await _read_campaigns(client)
    if result.truncated:
        log.warning("campaigns.truncated", account_id=account_id, read=len(infos))
    deadline = time.monotonic() + READ_BUDGET_SECONDS
    rows: list[dict[str, Any]] = []
    for info in infos:
        if info.list_id not in lists:
            continue
        row = _row(info)
        try:
            row["stats"] = await _stats(client, info, cached.get(info.id), time.monotonic() < deadline)
        except ConnectorError as exc:
            # The rest still refresh; save_campaigns keeps this one's totals of the last good read.
            result.failed += 1
            log.warning("campaigns.stats_failed", campaign_id=info.id, error=type(exc).__name__)
        rows.append(row)
    async with pc.db.session_scope() as session:
        await campaigns_repo.save_campaigns(session, account_id, rows)
    result.campaigns = len(rows)
    return result


async def names_of_unknown(pc: ProcessContext, account_id: int, ids: Iterable[int]) -> dict[int, str]:
    """Subjects of the campaigns ``ids`` read from the platform's campaign list and cached (with the account's
    other recent campaigns); a full refresh is queued for their totals. Never raises: a note whose campaign
    stays unnamed says "campaign #id"."""
    now = time.monotonic()
    wanted = {i for i in ids if i and _MISSED.get((account_id, i), 0.0) <= now}
    if not wanted:
        return {}
    try:
        async with pc.db.session_scope() as session:
            client, esp = await providers.esp_reports_client(session, pc, account_id)
            _, spec = await spec_repo.current_spec(session, account_id)
        infos, _ = await _read_campaigns(client)
    except (ConnectorError, AccountNotReady, UnknownAccount) as exc:
        log.warning("campaigns.lookup_failed", account_id=account_id, error=type(exc).__name__)
        # A failure that may pass (a timeout, a dropped connection, a rate limit) is not "not found": the next
        # notes job asks again instead of writing this campaign's notes unnamed for MISS_TTL_SECONDS.
        if not (isinstance(exc, ConnectorError) and exc.retryable):
            _missed(account_id, wanted, now)
        return {}
    lists = _lists(esp, spec)
    # Without stats: save_campaigns keeps the totals of campaigns read before, the queued refresh adds them.
    rows = [{**_row(c), "stats": None} for c in infos if c.id in wanted or c.list_id in lists]
    async with pc.db.session_scope() as session:
        await campaigns_repo.save_campaigns(session, account_id, rows)
    await enqueue.refresh_campaigns(pc.queue, account_id)
    found = {c.id: c.subject for c in infos if c.id in wanted and c.subject}
    _missed(account_id, wanted - found.keys(), now)
    log.info("campaigns.looked_up", account_id=account_id, wanted=len(wanted), named=len(found))
    return found


def _missed(account_id: int, ids: Iterable[int], now: float) -> None:
    if len(_MISSED) > 10_000:
        for key in [k for k, until in _MISSED.items() if until <= now]:
            del _MISSED[key]
    for i in ids:
        _MISSED[(account_id, i)] = now + MISS_TTL_SECONDS


def _lists(esp: EspAccount, spec: StoredSpec) -> set[int]:
    """The lists the account puts addresses in: its base list and the ids of its spec's lists."""
    lists = {rule.list_id for rule in spec.lists if rule.list_id is not None}
    if esp.list_id is not None:
        lists.add(esp.list_id)
    return lists


async def _read_campaigns(client: UnisenderClient) -> tuple[list[CampaignInfo], bool]:
    """The campaigns started within LOOKBACK (by id: a campaign started while paging may shift a page)."""
    since = utcnow() - LOOKBACK
    found: dict[int, CampaignInfo] = {}
    for page in range(MAX_PAGES):
        batch = await client.get_campaigns(start_from=since, limit=PAGE, offset=page * PAGE)
        found.update((c.id, c) for c in batch)
        if len(batch) < PAGE:
            return list(found.values()), False
    return list(found.values()), True


def _row(info: CampaignInfo) -> dict[str, Any]:
    return {
        "campaign_id": info.id,
        "subject": info.subject or "",
        "list_id": info.list_id,
        "status": (info.status or None) and info.status[:32],  # the column's width
        "started_at": info.start_time,
    }


async def _stats(
    client: UnisenderClient, info: CampaignInfo, cached: _Cached | None, in_budget: bool
) -> dict[str, int]:
    common = await client.get_campaign_common_stats(info.id)
    stats = {
        "sent": common.sent,
        "delivered": common.delivered,
        "opened": common.read_unique,
        "clicked": common.clicked_unique,
        "unsubscribed": common.unsubscribed,
        "complained": common.spam,
    }
    stored = cached.stats if cached is not None and cached.stats else {}
    previous = None if stored.get("bounced_estimated") else stored.get("bounced")
    if previous is not None and not (in_budget and _bounces_may_change(info, cached)):
        stats["bounced"] = int(previous)
    elif in_budget:
        rows = await client.get_campaign_delivery_stats(
            info.id, poll_interval=TASK_POLL_SECONDS, max_polls=TASK_MAX_POLLS
        )
        stats["bounced"] = sum(
            1 for r in rows if providers.esp_delivery_kind("email_status", r.send_result) in _BOUNCES
        )
    else:
        # Out of time before this campaign's first bounce read: the common stats' estimate (letters not
        # delivered, pending ones included), flagged so that the next refresh counts them.
        stats["bounced"] = max(0, common.sent - common.delivered)
        stats["bounced_estimated"] = 1
    return stats


def _bounces_may_change(info: CampaignInfo, cached: _Cached | None) -> bool:
    """False once a read happened BOUNCE_WINDOW after the campaign started."""
    started = info.start_time or (cached.started_at if cached is not None else None)
    if cached is None or started is None:
        return True
    return cached.refreshed_at < started + BOUNCE_WINDOW
