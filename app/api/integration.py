"""Integration setup: create/update, the Kommo OAuth dance, the Unisender key, Kommo's uninstall hook."""

from __future__ import annotations

import html

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from app.accounts import service
from app.accounts.schemas import DisableOut, IntegrationIn, IntegrationOut, UnisenderIn, UnisenderOut
from app.api.deps import AdminDep, ContextDep, SessionDep, require_admin
from app.api.routing import AppRoute
from app.errors import Unauthorized

router = APIRouter(tags=["integration"], route_class=AppRoute)


@router.post(
    "/integration",
    dependencies=[AdminDep],
    response_model=IntegrationOut,
    status_code=201,
    responses={200: {"model": IntegrationOut, "description": "Updated"}},
    summary="Create (201) or update (200) an account's Kommo integration",
)
async def save_integration(
    body: IntegrationIn, response: Response, ctx: ContextDep, session: SessionDep
) -> IntegrationOut:
    out, created = await service.save_integration(session=session, pc=ctx, data=body)
    response.status_code = 201 if created else 200
    return out


@router.get(
    "/auth",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "To Kommo's consent page"}},
    summary="Start connecting Kommo: redirects to Kommo's consent page",
)
async def auth(ctx: ContextDep, session: SessionDep, id: int = Query(gt=0)) -> RedirectResponse:
    url = await service.start_oauth(session=session, pc=ctx, account_id=id)
    return RedirectResponse(url, status_code=302)


def _page(title: str, message: str, status_code: int) -> HTMLResponse:
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})


@router.get(
    "/auth/callback",
    response_class=HTMLResponse,
    # The person who clicked reads a page, also when the connection is refused.
    responses={400: {"content": {"text/html": {}}, "description": "Not connected: the page says why"}},
    summary="Kommo's OAuth redirect",
)
async def auth_callback(
    ctx: ContextDep,
    code: str | None = None,
    state: str | None = None,
    referer: str | None = None,
    client_id: str | None = None,
    error: str | None = None,
    from_widget: str | None = None,
) -> HTMLResponse:
    params = service.CallbackParams(
        code=code,
        state=state,
        referer=referer,
        client_id=client_id,
        error=error,
        from_widget=from_widget is not None,
    )
    try:
        # This handler owns its transaction: a refused callback must roll back (state not consumed).
        async with ctx.db.session_scope() as session:
            account_id = await service.complete_oauth(session=session, pc=ctx, params=params)
    except service.OAuthCallbackError as exc:
        return _page("Kommo was not connected", exc.message, 400)
    registered = await service.register_kommo_webhooks(ctx, account_id)
    note = "" if registered else " Contact webhooks could not be registered yet; they will be retried."
    return _page(
        "Kommo connected", f"Kommo account {account_id} is connected. You can close this window.{note}", 200
    )


async def _authorize_account(
    request: Request, ctx: ContextDep, session: SessionDep, account_id: int, token: str | None
) -> None:
    """Operator bearer token, or the account's own webhook token (``?token=`` or ``X-Widget-Token``)."""
    if request.headers.get("authorization"):
        try:
            await require_admin(request, ctx)
            return
        except Unauthorized:
            if token is None:
                raise
    await service.verify_webhook_token(session, account_id, token)


async def _account_access(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    account_id: int,
    token: str | None = None,
    x_widget_token: str | None = Header(None),
) -> None:
    # A dependency, so it runs before the body is validated: without credentials the answer is 401, never a
    # 422 describing the body (found by the schemathesis fault test).
    await _authorize_account(request, ctx, session, account_id, token or x_widget_token)


@router.post(
    "/integration/{account_id}/unisender",
    response_model=UnisenderOut,
    dependencies=[Depends(_account_access)],
    summary="Store the account's Unisender API key (checked first) and register the unsubscribe hook",
)
async def connect_unisender(
    account_id: int, body: UnisenderIn, ctx: ContextDep, session: SessionDep
) -> UnisenderOut:
    return await service.connect_unisender(session=session, pc=ctx, account_id=account_id, data=body)


@router.get("/kommo/disable", response_model=DisableOut, summary="Kommo's uninstall hook (signed)")
async def kommo_disable(
    session: SessionDep, client_uuid: str = "", account_id: str = "", signature: str = ""
) -> DisableOut:
    await service.disable_integration(
        session=session, account_id=account_id.strip(), client_uuid=client_uuid, signature=signature
    )
    return DisableOut()
