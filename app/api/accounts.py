"""Operator views of accounts: connection state, queues, recent errors (no secrets)."""

from __future__ import annotations

from fastapi import APIRouter

from app.accounts import views
from app.accounts.schemas import AccountView
from app.api.deps import AdminDep, SessionDep, ValidAccountPath
from app.api.routing import AppRoute

router = APIRouter(tags=["accounts"], dependencies=[AdminDep], route_class=AppRoute)


@router.get("/accounts", response_model=list[AccountView], summary="Every account's state")
async def list_accounts(session: SessionDep) -> list[AccountView]:
    return await views.list_accounts(session=session)


@router.get("/accounts/{account_id}", response_model=AccountView, summary="One account's state")
async def get_account(integration: ValidAccountPath, session: SessionDep) -> AccountView:
    return await views.account_view(session=session, integration=integration)
