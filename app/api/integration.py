"""Integration setup: create/update, the Kommo OAuth dance, the Unisender key, token rotation, Kommo's
uninstall hook."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from app.accounts import integrations, oauth, rotation, unisender, widget
from app.accounts.errors import OAuthCallbackError, OAuthThrottled
from app.accounts.schemas import (
    DisableOut,
    IntegrationIn,
    IntegrationOut,
    RotatedTokenOut,
    UnisenderIn,
    UnisenderOut,
)
from app.api.deps import AccountIdPath, AdminDep, ContextDep, IntakeDep, SessionDep, require_admin
from app.api.routing import AppRoute
from app.db.models import Integration
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
    out, created = await integrations.save_integration(session=session, pc=ctx, data=body, auth=intake.auth)
    response.status_code = 201 if created else 200
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
    url = await oauth.start_oauth(session=session, pc=ctx, account_id=id, sig=sig)
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
    params = oauth.CallbackParams(
        code=code,
        state=state,
        referer=referer,
        client_id=client_id,
        error=error,
        from_widget=from_widget is not None,
    )
    try:
        # No request session: the service owns its transaction, so a refused callback rolls back (state unused).
        connected = await oauth.connect_kommo(ctx, params, auth=intake.auth)
    except OAuthCallbackError as exc:
        return _page("Kommo was not connected", exc.message, 400)
    except OAuthThrottled as exc:
        return _page("Kommo was not connected", exc.message, 429, {"Retry-After": str(exc.retry_after)})
    note = (
        ""
        if connected.webhooks_registered
        else " Contact webhooks could not be registered yet; they will be retried."
    )
    return _page(
        "Kommo connected",
        f"Kommo account {connected.account_id} is connected. You can close this window.{note}",
        200,
    )


async def _account_access(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    account_id: AccountIdPath,
    x_auth_token: str | None = Header(
        None,
        description="Kommo's widget token (the widget's $authorizedAjax sends it), for that account only",
    ),
) -> Integration:
    """The account's integration, for the operator bearer token or a Kommo widget token issued for this
    account's integration and account (404 ``unknown_account`` for the operator, 401 for a widget token).

    A dependency, so it runs before the body is validated: without credentials the answer is 401, never a
    422 describing the body (found by the schemathesis fault test). The webhook token is not accepted: it
    sits in URLs stored at Kommo and Unisender, and must not be able to replace the Unisender key.
    """
    if request.headers.get("authorization") or x_auth_token is None:
        try:
            await require_admin(request, ctx)
        except Unauthorized:
            if x_auth_token is None:
                raise
        else:
            return await integrations.require_account(session, account_id)
    return await widget.widget_account(session=session, token=x_auth_token, account_id=account_id)


@router.post(
    "/integration/{account_id}/unisender",
    response_model=UnisenderOut,
    summary="Store the account's Unisender API key (checked first) and register the unsubscribe hook",
)
async def connect_unisender(
    integration: Annotated[Integration, Depends(_account_access)],
    body: UnisenderIn,
    ctx: ContextDep,
    session: SessionDep,
) -> UnisenderOut:
    return await unisender.connect_unisender(session=session, pc=ctx, integration=integration, data=body)


@router.post(
    "/integration/{account_id}/rotate-token",
    response_model=RotatedTokenOut,
    dependencies=[AdminDep],
    summary="Issue a new webhook token (the old one is refused at once) and re-register Kommo's and "
    "Unisender's hooks under it",
)
async def rotate_token(account_id: AccountIdPath, ctx: ContextDep, intake: IntakeDep) -> RotatedTokenOut:
    # Not ValidAccountPath: the service owns its transactions, so no request session stays open while it calls
    # Kommo and Unisender; it answers an unknown account with the same 404.
    return await rotation.rotate_webhook_token(ctx, account_id, auth=intake.auth)


@router.get("/kommo/disable", response_model=DisableOut, summary="Kommo's uninstall hook (signed)")
async def kommo_disable(
    session: SessionDep, client_uuid: str = "", account_id: str = "", signature: str = ""
) -> DisableOut:
    await integrations.disable_integration(
        session=session, account_id=account_id, client_uuid=client_uuid, signature=signature
    )
    return DisableOut()
