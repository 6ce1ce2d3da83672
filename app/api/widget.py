"""The Kommo widget's endpoints: ``POST /widget/key`` stores the Unisender key an account admin pasted into
the widget's settings, ``GET /widget/connection`` shows the connection and the lists to pick from. Kommo's
widget token (``X-Auth-Token``) says which account; the browser calls from the account's own origin
(``https://acme.kommo.com``), so these paths, and only these, answer CORS."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.routing import APIRoute

from app.accounts import unisender, widget
from app.accounts.schemas import UnisenderIn, UnisenderOut
from app.api.deps import ContextDep, SessionDep
from app.connectors.kommo.hosts import parse_account_host
from app.db.models import Integration
from app.widget.connection import WidgetConnectionOut, widget_connection

_ALLOW_HEADERS = "Content-Type, X-Auth-Token"
_MAX_AGE = "600"


def _allowed_origin(request: Request) -> str | None:
    """The request's Origin when it is a Kommo account's (``https://{account host}``, allow-listed)."""
    origin = request.headers.get("origin", "")
    if not origin.startswith("https://"):
        return None
    try:
        parse_account_host(
            origin.removeprefix("https://"), domains=request.app.state.ctx.settings.account_domains
        )
    except ValueError:
        return None
    return origin


class WidgetCorsRoute(APIRoute):
    """Adds CORS headers for a Kommo account origin to every answer of the route, errors included (the
    widget must be able to read why a key was refused). Errors are rendered by the app's own handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_cors(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                response = await _render(request, exc)
            origin = _allowed_origin(request)
            if origin is not None:
                response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            return response

        return with_cors


async def _render(request: Request, exc: Exception) -> Response:
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            response: Response = await handlers[cls](request, exc)
            return response
    raise exc


router = APIRouter(tags=["widget"], route_class=WidgetCorsRoute)


def _preflight(request: Request, methods: str) -> Response:
    response = Response(status_code=204)
    if _allowed_origin(request) is not None:
        response.headers["Access-Control-Allow-Methods"] = methods
        response.headers["Access-Control-Allow-Headers"] = _ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = _MAX_AGE
    return response


@router.options("/widget/key", include_in_schema=False)
async def widget_key_preflight(request: Request) -> Response:
    return _preflight(request, "POST, OPTIONS")


@router.options("/widget/connection", include_in_schema=False)
async def widget_connection_preflight(request: Request) -> Response:
    return _preflight(request, "GET, OPTIONS")


async def _widget_account(
    session: SessionDep,
    x_auth_token: str | None = Header(None, description="Kommo's disposable widget token (HS256 JWT)"),
) -> Integration:
    return await widget.widget_account(session=session, token=x_auth_token)


@router.post(
    "/widget/key",
    response_model=UnisenderOut,
    summary="From the Kommo widget: store the account's Unisender key (account from the X-Auth-Token)",
)
async def widget_key(
    body: UnisenderIn,
    ctx: ContextDep,
    session: SessionDep,
    # A dependency, so a missing or bad token is a 401 before the body is looked at.
    integration: Integration = Depends(_widget_account),
) -> UnisenderOut:
    return await unisender.connect_unisender(session=session, pc=ctx, integration=integration, data=body)


@router.get(
    "/widget/connection",
    response_model=WidgetConnectionOut,
    summary="From the Kommo widget: the account's Unisender connection and lists (account from the X-Auth-Token)",
)
async def widget_connection_state(
    ctx: ContextDep, session: SessionDep, integration: Integration = Depends(_widget_account)
) -> WidgetConnectionOut:
    return await widget_connection(session=session, pc=ctx, integration=integration)
