"""Campaigns and their activity: getCampaigns, getCampaignStatus, getCampaignCommonStats,
getCampaignDeliveryStats (legacy synchronous form; the async task form is followed when it answers, or when
the synchronous name is gone) and getVisitedLinks. Mixed into ``UnisenderClient``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import pydantic

from app.connectors.unisender.exceptions import UnisenderRequestError, UnisenderTransientError
from app.connectors.unisender.exports import TaskMethods
from app.connectors.unisender.imports import Params
from app.connectors.unisender.reports import (
    CampaignCommonStats,
    CampaignInfo,
    CampaignStatus,
    DeliveryStat,
    Table,
    VisitedLink,
    delivery_stats,
    format_time,
    table_from_result,
    values_of,
    visited_links,
)

MAX_CAMPAIGNS_PAGE = 100  # getCampaigns' documented limit on unisender.com

_ModelT = TypeVar("_ModelT", bound=pydantic.BaseModel)


def _bad(method: str, why: str) -> UnisenderTransientError:
    # An unreadable result is most likely a glitch; the caller's retry cap bounds a persistent one.
    return UnisenderTransientError(f"unisender {method}: {why}", status_code=200, code="bad_response")


def _model(method: str, model: type[_ModelT], value: Any) -> _ModelT:
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        where = [e.get("loc") for e in exc.errors()][:3]
        raise _bad(method, f"unexpected result shape at {where}") from exc


class CampaignMethods(TaskMethods):
    """Campaign reads; ``call`` is ``UnisenderClient.call``."""

    async def get_campaigns(
        self,
        *,
        start_from: datetime | None = None,
        start_to: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[CampaignInfo]:
        """One page of campaigns whose start time is in [start_from, start_to] (UTC), ``limit`` 1..100."""
        if not 1 <= limit <= MAX_CAMPAIGNS_PAGE or offset < 0:
            raise ValueError(f"limit must be 1..{MAX_CAMPAIGNS_PAGE} and offset >= 0")
        params: Params = [("limit", str(limit)), ("offset", str(offset))]
        if start_from is not None:
            params.append(("from", format_time(start_from)))
        if start_to is not None:
            params.append(("to", format_time(start_to)))
        result = await self.call("getCampaigns", params)
        if isinstance(result, dict) and "campaigns" in result:
            result = result["campaigns"]
        items = [] if result in (None, "") else values_of(result)
        if items is None:
            raise _bad("getCampaigns", "expected a list of campaigns")
        return [_model("getCampaigns", CampaignInfo, item) for item in items]

    async def get_campaign_status(self, campaign_id: int) -> CampaignStatus:
        """getCampaignStatus: e.g. ``scheduled``, ``in_progress``, ``completed``."""
        result = await self.call("getCampaignStatus", [("campaign_id", str(campaign_id))])
        return _model("getCampaignStatus", CampaignStatus, result)

    async def get_campaign_common_stats(self, campaign_id: int) -> CampaignCommonStats:
        """getCampaignCommonStats: totals of sent, delivered, read, clicked, unsubscribed and spam."""
        result = await self.call("getCampaignCommonStats", [("campaign_id", str(campaign_id))])
        if not isinstance(result, dict):
            raise _bad("getCampaignCommonStats", "expected an object result")
        return _model("getCampaignCommonStats", CampaignCommonStats, result)

    async def get_campaign_delivery_stats(
        self,
        campaign_id: int,
        *,
        changed_since: datetime | None = None,
        field_ids: Sequence[int] = (),
        poll_interval: float | None = None,
        max_polls: int | None = None,
    ) -> list[DeliveryStat]:
        """Every recipient's ``send_result`` (changed since ``changed_since``, inclusive), plus the user fields
        ``field_ids`` as extra columns.

        Calls the synchronous getCampaignDeliveryStats; if it answers with a task, or the method is unknown,
        the async task is followed to its file (``poll_interval``/``max_polls`` bound the wait)."""
        params: Params = [("campaign_id", str(campaign_id))]
        if changed_since is not None:
            params.append(("changed_since", format_time(changed_since)))
        params.extend((f"field_ids[{i}]", str(int(fid))) for i, fid in enumerate(field_ids))
        method = "getCampaignDeliveryStats"
        try:
            result = await self.call(method, params)
        except UnisenderRequestError as exc:
            if exc.code != "unknown_method":
                raise
            method = "async/getCampaignDeliveryStats"
            result = await self.call(method, params)
        table = await self._table(method, result, poll_interval=poll_interval, max_polls=max_polls)
        return delivery_stats(table)

    async def get_visited_links(self, campaign_id: int, *, group: bool = False) -> list[VisitedLink]:
        """getVisitedLinks: one row per click, or with ``group`` one per (email, url) with its count."""
        params: Params = [("campaign_id", str(campaign_id)), ("group", "1" if group else "0")]
        result = await self.call("getVisitedLinks", params)
        return visited_links(await self._table("getVisitedLinks", result))

    async def _table(
        self, method: str, result: Any, *, poll_interval: float | None = None, max_polls: int | None = None
    ) -> Table:
        if isinstance(result, dict) and "task_uuid" in result:
            return await self.task_table(method, result, poll_interval=poll_interval, max_polls=max_polls)
        if result in (None, "", [], {}):
            return Table((), ())
        table = table_from_result(result)
        if table is None:
            raise _bad(method, "expected {fields, data}")
        return table
