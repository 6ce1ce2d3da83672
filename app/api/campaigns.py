"""The campaigns the email platform sent to an account's lists, with their totals, as last refreshed (every
10 minutes). An operator (bearer token) may read any account; the Kommo widget (its ``X-Auth-Token``) its own."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import SessionDep
from app.api.mapping import path_account
from app.api.routing import AppRoute
from app.sync import campaigns

router = APIRouter(tags=["accounts"], route_class=AppRoute)


@router.get(
    "/accounts/{account_id}/campaigns",
    response_model=list[campaigns.CampaignView],
    summary="The account's campaigns and their totals, newest first (cached; refreshed every 10 minutes)",
)
async def list_campaigns(
    session: SessionDep, account_id: int = Depends(path_account)
) -> list[campaigns.CampaignView]:
    return await campaigns.campaign_views(session, account_id)
