"""The campaigns cache's pure rules: which lists count as the account's, and when bounces are read again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.config import Settings
from app.connectors.unisender.reports import CampaignInfo
from app.db.models import EspAccount
from app.sync import campaigns
from app.sync.spec import ListRule, StoredSpec
from app.worker.settings import cron_jobs, functions

START = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def test_the_accounts_lists_are_its_base_list_and_its_specs_lists() -> None:
    spec = StoredSpec(
        lists=[ListRule(base=True, all=True), ListRule(list_id=7, tag="vip"), ListRule(tag="x")]
    )
    assert campaigns._lists(EspAccount(list_id=101), spec) == {101, 7}
    assert campaigns._lists(EspAccount(list_id=None), spec) == {7}


def test_bounces_are_read_until_a_read_after_the_window() -> None:
    info = CampaignInfo(id=1, start_time=START)

    def cached(refreshed_at: datetime) -> campaigns._Cached:
        return campaigns._Cached({"bounced": 3}, START, refreshed_at)

    assert campaigns._bounces_may_change(info, None)
    assert campaigns._bounces_may_change(info, cached(START + timedelta(days=2)))
    assert not campaigns._bounces_may_change(info, cached(START + campaigns.BOUNCE_WINDOW))
    # No start time from the platform: the cached one, else always read.
    undated = CampaignInfo(id=1)
    assert not campaigns._bounces_may_change(undated, cached(START + timedelta(days=4)))
    assert campaigns._bounces_may_change(undated, campaigns._Cached({}, None, START))


def test_the_worker_refreshes_campaigns_every_ten_minutes(settings: Settings) -> None:
    (tick,) = [c for c in cron_jobs(settings) if c.name == "campaigns"]
    assert tick.minute == set(range(3, 60, 10))
    assert "refresh_campaigns" in {f.name for f in functions(settings)}
