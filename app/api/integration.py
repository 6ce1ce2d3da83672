"""Integration setup: create/update, the Kommo OAuth dance, the Unisender key, token rotation, Kommo's
uninstall hook."""

from __future__ import annotations

import html

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from app.accounts import service
from app.accounts.schemas import (
    DisableOut,
    IntegrationIn,
    IntegrationOut,
    RotatedTokenOut,
    UnisenderIn,
    UnisenderOut,
)
from app.api.deps import AdminDep, ContextDep, IntakeDep, SessionDep, require_admin
from app.api.routing import AppRoute
from app.db.session import after_commit
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
    body: IntegrationIn, response: Response, ctx: ContextDep, session: SessionDep, intake: IntakeDep
) -> IntegrationOut:
    out, created = await service.save_integration(session=session, pc=ctx, data=body)
    response.status_code = 201 if created else 200

    async def forget() -> None:  # webhooks are checked against the account's subdomain and host
        intake.auth.forget(body.account_id)

    after_commit(session, forget)
    return out


@router.get(
    "/auth",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "To Kommo's consent page"}},
    summary="Start connecting Kommo (the signed link from POST /integration): redirects to Kommo's consent page",
)
async def auth(
    ctx: ContextDep,
    session: SessionDep,
    id: int = Query(gt=0),
    sig: str = Query("", max_length=128, description="The link's signature, as POST /integration gave it"),
) -> RedirectResponse:
    url = await service.start_oauth(session=session, pc=ctx, account_id=id, sig=sig)
    return RedirectResponse(url, status_code=302)


def _page(title: str, message: str, status_code: int, headers: dict[str, str] | None = None) -> HTMLResponse:
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(
        body, status_code=status_code, headers={"Cache-Control": "no-store", **(headers or {})}
    )


@router.get(
    "/auth/callback",
    response_class=HTMLResponse,
    # The person who clicked reads a page, also when the connection is refused.
    responses={
        400: {"content": {"text/html": {}}, "description": "Not connected: the page says why"},
        429: {"content": {"text/html": {}}, "description": "Too many attempts for the account: retry later"},
    },
    summary="Kommo's OAuth redirect",
)
async def auth_callback(
    ctx: ContextDep,
    intake: IntakeDep,
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
    except service.OAuthThrottled as exc:
        return _page("Kommo was not connected", exc.message, 429, {"Retry-After": str(exc.retry_after)})
    intake.auth.forget(account_id)  # the redirect may have named a new host for the account's webhooks
    registered = await service.register_kommo_webhooks(ctx, account_id)
    note = "" if registered else " Contact webhooks could not be registered yet; they will be retried."
    return _page(
        "Kommo connected", f"Kommo account {account_id} is connected. You can close this window.{note}", 200
    )


async def _account_access(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    account_id: int,
    x_auth_token: str | None = Header(
        None,
        description="Kommo's widget token (the widget's $authorizedAjax sends it), for that account only",
    ),
) -> None:
    """Operator bearer token, or a Kommo widget token issued for this account's integration and account.

    A dependency, so it runs before the body is validated: without credentials the answer is 401, never a
    422 describing the body (found by the schemathesis fault test). The webhook token is not accepted: it
    sits in URLs stored at Kommo and Unisender, and must not be able to replace the Unisender key.
    """
    if request.headers.get("authorization") or x_auth_token is None:
        try:
            await require_admin(request, ctx)
            return
        except Unauthorized:
            if x_auth_token is None:
                raise
    await service.widget_account(session=session, token=x_auth_token, account_id=account_id)


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


@router.post(
    "/integration/{account_id}/rotate-token",
    response_model=RotatedTokenOut,
    dependencies=[AdminDep],
    summary="Issue a new webhook token (the old one is refused at once) and re-register Kommo's and "
    "Unisender's hooks under it",
)
async def rotate_token(account_id: int, ctx: ContextDep, intake: IntakeDep) -> RotatedTokenOut:
    return await service.rotate_webhook_token(ctx, account_id, auth=intake.auth)


@router.get("/kommo/disable", response_model=DisableOut, summary="Kommo's uninstall hook (signed)")
async def kommo_disable(
    session: SessionDep, client_uuid: str = "", account_id: str = "", signature: str = ""
) -> DisableOut:
    await service.disable_integration(
        session=session, account_id=account_id.strip(), client_uuid=client_uuid, signature=signature
    )
    return DisableOut()
