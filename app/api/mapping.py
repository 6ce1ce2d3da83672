"""The sync spec of an account (``/integration/{id}/mapping``) and what can be mapped, read live from Kommo
and Unisender. An operator (bearer token) may use any account; the Kommo widget (its ``X-Auth-Token``) only
its own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel

from app.accounts import widget
from app.accounts.integrations import require_account
from app.api.deps import AccountIdPath, AccountIdQuery, ContextDep, SessionDep, require_admin
from app.api.routing import AppRoute
from app.errors import Forbidden
from app.sync import specs
from app.sync.spec import SpecIn

router = APIRouter(tags=["mapping"], route_class=AppRoute)


async def _allowed(
    request: Request, ctx: ContextDep, session: SessionDep, account_id: int, token: str | None
) -> None:
    if token is None:
        await require_admin(request, ctx)
    else:
        integration = await widget.widget_account(session=session, token=token)
        if integration.account_id != account_id:
            raise Forbidden("This widget token was issued for another Kommo account.", code="wrong_account")
    await require_account(session, account_id)


async def path_account(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    account_id: AccountIdPath,
    x_auth_token: str | None = Header(None, description="The Kommo widget's token, instead of the bearer"),
) -> int:
    await _allowed(request, ctx, session, account_id, x_auth_token)
    return account_id


async def query_account(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    id: AccountIdQuery,
    x_auth_token: str | None = Header(None, description="The Kommo widget's token, instead of the bearer"),
) -> int:
    await _allowed(request, ctx, session, id, x_auth_token)
    return id


class KommoFieldOut(BaseModel):
    id: int
    name: str
    type: str
    code: str | None
    options: list[str]
    source: str  # how a spec names it


class UnisenderFieldOut(BaseModel):
    id: int
    name: str
    type: str


class UnisenderListOut(BaseModel):
    id: int
    title: str


@router.get(
    "/integration/{account_id}/mapping",
    response_model=specs.MappingOut,
    summary="The account's sync spec: fields and lists, resolved, with its version",
)
async def get_mapping(session: SessionDep, account_id: int = Depends(path_account)) -> specs.MappingOut:
    return await specs.mapping_view(session, account_id)


@router.put(
    "/integration/{account_id}/mapping",
    response_model=specs.MappingOut,
    summary="Replace the sync spec (checked against Kommo and Unisender); re-derives the account in a run",
)
async def put_mapping(
    body: SpecIn, ctx: ContextDep, session: SessionDep, account_id: int = Depends(path_account)
) -> specs.MappingOut:
    return await specs.replace_spec(session, ctx, account_id, body)


@router.post(
    "/integration/{account_id}/mapping/preview",
    summary="Dry run of a spec: per address what Unisender holds, what would be sent, the differences; totals",
)
async def preview_mapping(
    body: specs.PreviewIn, ctx: ContextDep, session: SessionDep, account_id: int = Depends(path_account)
) -> dict[str, Any]:
    return await specs.preview(session, ctx, account_id, body)


@router.get(
    "/kommo/fields", response_model=list[KommoFieldOut], summary="The account's Kommo contact fields (live)"
)
async def kommo_fields(ctx: ContextDep, account_id: int = Depends(query_account)) -> list[KommoFieldOut]:
    fields = await specs.kommo_fields(ctx, account_id)
    return [
        KommoFieldOut(
            id=f.id,
            name=f.name,
            type=f.type,
            code=f.code,
            options=list(f.options),
            source=f"custom_field:{f.code or f.id}",
        )
        for f in fields
    ]


@router.get(
    "/unisender/fields",
    response_model=list[UnisenderFieldOut],
    summary="The account's Unisender fields (live)",
)
async def unisender_fields(
    ctx: ContextDep, session: SessionDep, account_id: int = Depends(query_account)
) -> list[UnisenderFieldOut]:
    fields = await specs.unisender_fields(session, ctx, account_id)
    return [UnisenderFieldOut(id=f.id, name=f.name, type=f.type) for f in fields]


@router.get(
    "/unisender/lists", response_model=list[UnisenderListOut], summary="The account's Unisender lists (live)"
)
async def unisender_lists(
    ctx: ContextDep, session: SessionDep, account_id: int = Depends(query_account)
) -> list[UnisenderListOut]:
    lists = await specs.unisender_lists(session, ctx, account_id)
    return [UnisenderListOut(id=lst.id, title=lst.title) for lst in lists]
