"""Campaign methods: getCampaigns, getCampaignStatus, getCampaignCommonStats, getCampaignDeliveryStats (the
legacy synchronous form and async/getCampaignDeliveryStats, a task), getVisitedLinks.

Every answer is read from the campaign's records, i.e. what its timeline has played so far; once the
campaign is ``completed`` they equal its facts (``GET /_sandbox/accounts/{key}/campaigns/{id}/facts``).
An unknown campaign id is ``invalid_arg`` ``Campaign with id=N not found`` (the real error is undocumented).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sandbox.unisender.campaigns import DELIVERED, Campaign, Record
from sandbox.unisender.methods.call import Call, invalid_arg, p_flag, p_int, p_str, parse_ids
from sandbox.unisender.methods.tasks import new_task, notify_url_param
from sandbox.unisender.state import Field

_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _campaign(call: Call) -> Campaign:
    campaign_id = p_int(call, "campaign_id", required=True)
    assert campaign_id is not None
    campaign = call.account.campaigns.get(campaign_id)
    if campaign is None:
        raise invalid_arg(f"Campaign with id={campaign_id} not found")
    return campaign


def _time_arg(call: Call, name: str) -> str | None:
    """A UTC time argument normalised to ``YYYY-MM-DD hh:mm:ss`` (which then compares as text)."""
    raw = p_str(call, name)
    if raw is None or not raw.strip():
        return None
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(raw.strip(), fmt).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
    raise invalid_arg(f'Argument "{name}" must be a time "YYYY-MM-DD hh:mm:ss", got "{raw}"')


def get_campaigns(call: Call) -> list[dict[str, Any]]:
    """getCampaigns(from, to, limit, offset): campaigns by start time window, oldest first."""
    since = _time_arg(call, "from")
    until = _time_arg(call, "to")
    limit = p_int(call, "limit", default=50)
    offset = p_int(call, "offset", default=0)
    assert limit is not None
    assert offset is not None
    cap = call.state.config.max_campaigns_page
    if not 1 <= limit <= cap:
        raise invalid_arg(f'Argument "limit" must be between 1 and {cap}')
    if offset < 0:
        raise invalid_arg('Argument "offset" must be >= 0')
    chosen = [
        c
        for c in sorted(call.account.campaigns.values(), key=lambda c: c.id)
        if (since is None or c.created_at >= since) and (until is None or c.created_at <= until)
    ]
    return [c.summary() for c in chosen[offset : offset + limit]]


def get_campaign_status(call: Call) -> dict[str, Any]:
    """getCampaignStatus(campaign_id) → {status, creation_time, start_time}."""
    campaign = _campaign(call)
    return {
        "status": campaign.status,
        "creation_time": campaign.created_at,
        "start_time": campaign.created_at,
    }


def common_stats(campaign: Campaign) -> dict[str, int]:
    """getCampaignCommonStats from the records; a click without a tracked open counts as one read."""
    records = list(campaign.records.values())

    def count(predicate: Any) -> int:
        return sum(1 for r in records if predicate(r))

    return {
        "total": len(records),
        "sent": count(lambda r: r.send_result != "not_sent"),
        "delivered": count(lambda r: r.send_result in DELIVERED),
        "read_unique": count(lambda r: r.opens > 0 or r.visits),
        "read_all": sum(r.opens or (1 if r.visits else 0) for r in records),
        "clicked_unique": count(lambda r: r.visits),
        "clicked_all": sum(len(r.visits) for r in records),
        "unsubscribed": count(lambda r: r.unsubscribed),
        "spam": count(lambda r: r.complained),
    }


def get_campaign_common_stats(call: Call) -> dict[str, int]:
    """getCampaignCommonStats(campaign_id)."""
    return common_stats(_campaign(call))


def _field_columns(call: Call) -> list[Field]:
    """``field_ids`` as an array (``field_ids[]=1``) or comma-separated (``field_ids=1,2``)."""
    raw = call.params.get("field_ids")
    if raw is None:
        return []
    values = [v for v in raw.values() if isinstance(v, str)] if isinstance(raw, dict) else [raw]
    ids: list[int] = []
    for value in values:
        try:
            ids.extend(parse_ids(value))
        except ValueError:
            raise invalid_arg(f'Argument "field_ids" must be field ids, got "{value}"') from None
    fields: list[Field] = []
    for fid in ids:
        fld = call.account.fields.get(fid)
        if fld is None:
            raise invalid_arg(f"Field {fid} not found")
        fields.append(fld)
    return fields


def _delivery_table(call: Call) -> tuple[list[str], list[list[str]]]:
    campaign = _campaign(call)
    since = _time_arg(call, "changed_since")
    fields = _field_columns(call)
    columns = ["email", "send_result", "last_update", *(f.name for f in fields)]
    rows: list[list[str]] = []
    records: list[Record] = list(campaign.records.values())
    for record in records:
        if since is not None and record.last_update < since:
            continue
        contact = call.account.contacts_by_email.get(record.email)
        values = [contact.fields.get(f.id, "") if contact else "" for f in fields]
        rows.append([record.email, record.send_result, record.last_update, *values])
    return columns, rows


def get_campaign_delivery_stats(call: Call) -> dict[str, Any]:
    """Legacy synchronous getCampaignDeliveryStats → {fields, data}; ``changed_since`` is inclusive."""
    columns, rows = _delivery_table(call)
    return {"fields": columns, "data": rows}


def get_campaign_delivery_stats_async(call: Call) -> dict[str, Any]:
    """async/getCampaignDeliveryStats: the same table as a task's CSV file."""
    notify_url = notify_url_param(call)
    columns, rows = _delivery_table(call)
    return new_task(call, "campaign_delivery_stats", columns, rows, notify_url)


def get_visited_links(call: Call) -> dict[str, Any]:
    """getVisitedLinks(campaign_id, group): one row per click, or with group=1 per (email, url) with the
    click ``count`` and the latest click's time and ip."""
    campaign = _campaign(call)
    group = p_flag(call, "group") == 1
    if not group:
        data = [[r.email, v.url, v.at, v.ip] for r in campaign.records.values() for v in r.visits]
        return {"fields": ["email", "url", "request_time", "ip"], "data": data}
    grouped: dict[tuple[str, str], list[Any]] = {}
    for record in campaign.records.values():
        for visit in record.visits:
            row = grouped.setdefault((record.email, visit.url), [record.email, visit.url, "", "", 0])
            row[2], row[3] = visit.at, visit.ip
            row[4] += 1
    return {"fields": ["email", "url", "request_time", "ip", "count"], "data": list(grouped.values())}
