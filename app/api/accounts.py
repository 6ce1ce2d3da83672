"""Operator views of accounts: connection state, queues, recent errors (no secrets)."""

from __future__ import annotations

from fastapi import APIRouter

from app.accounts import service
from app.accounts.schemas import AccountView
from app.api.deps import AdminDep, SessionDep
from app.api.routing import AppRoute

router = APIRouter(tags=["accounts"], dependencies=[AdminDep], route_class=AppRoute)


@router.get("/accounts", response_model=list[AccountView], summary="Every account's state")
async def list_accounts(session: SessionDep) -> list[AccountView]:
    return await service.list_accounts(session=session)


@router.get("/accounts/{account_id}", response_model=AccountView, summary="One account's state")
async def get_account(account_id: int, session: SessionDep) -> AccountView:
    return await service.get_account(session=session, account_id=account_id)
