"""The console's pages and actions under ``/console``. Each action calls the service function the operator
API's endpoint calls (no HTTP in between, no logic of its own); pages read through the same views."""

from __future__ import annotations

import math
import secrets
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.accounts import integrations, unisender
from app.accounts.errors import MAX_ACCOUNT_ID
from app.accounts.links import auth_url_for
from app.accounts.schemas import UnisenderIn
from app.api.deps import ContextDep, SessionDep
from app.console import auth, deadletters_section, views
from app.console.auth import CheckedOperator, OperatorDep
from app.console.errors import CsrfRefused
from app.console.mapping_routes import router as mapping_router
from app.console.render import HERE, ConsoleRoute, page, see_other
from app.db.models import Integration
from app.errors import NotFound, Unprocessable
from app.sync import fullsync

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)

# Messages an action may leave for the page it redirects to, by key: nothing from the query string is echoed.
NOTICES = {
    "sync_started": "Full sync started.",
    "sync_running": "A full sync was already running: this is that one.",
    "mapping_saved": "Mapping saved: the account is being re-derived (the remap run below).",
    "unisender_connected": "Unisender connected.",
    "replayed": "Dead letter sent again.",
    "discarded": "Dead letter discarded.",
}


async def _account(
    session: SessionDep, account_id: Annotated[int, PathParam(gt=0, le=MAX_ACCOUNT_ID)]
) -> Integration:
    return await integrations.require_account(session, account_id)


AccountDep = Annotated[Integration, Depends(_account)]


def _next_path(raw: str | None) -> str:
    # Only console paths: a sign-in link must not send the operator elsewhere once signed in.
    if raw and raw.startswith("/console/") and not raw.startswith("/console//") and "\\" not in raw:
        return raw
    return "/console/accounts"


# --- static assets (public: the sign-in page needs them, and they hold nothing of the service) ---------------

_ASSETS = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _ASSETS:
        raise NotFound("No such file.", code="not_found")
    body = (HERE / "static" / name).read_bytes()
    return Response(body, media_type=_ASSETS[name], headers={"Cache-Control": "max-age=300"})


# --- sign-in, sign-out ------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def home() -> RedirectResponse:
    return see_other("/console/accounts")


def _sign_in_page(
    ctx: ContextDep, next_path: str, status_code: int = 200, error: str | None = None
) -> Response:
    pre = secrets.token_urlsafe(24)
    response = page("sign_in.html", status_code, csrf=None, form_csrf=pre, next=next_path, error=error)
    auth.set_cookie(response, ctx.settings, auth.SIGNIN_COOKIE, pre, auth.SIGNIN_COOKIE_SECONDS)
    return response


SIGN_IN_PER_CLIENT = 10  # attempts a minute from one address
SIGN_IN_PER_MINUTE = 100  # attempts a minute from every address together


@router.get("/sign-in")
async def sign_in_form(
    request: Request, ctx: ContextDep, session: SessionDep, next: str | None = None
) -> Response:
    if await auth.current_operator(request, session) is not None:
        return see_other(_next_path(next))
    return _sign_in_page(ctx, _next_path(next))


@router.post("/sign-in")
async def sign_in(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    token: Annotated[str, Form(max_length=512)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    if not auth.same_secret(csrf_token, request.cookies.get(auth.SIGNIN_COOKIE, "")):
        raise CsrfRefused()
    # Guessing the operator token online: a few tries a minute per client, and a cap over all clients.
    client = request.client.host if request.client else "unknown"
    wait = ctx.attempts.try_acquire(
        {f"console-sign-in:{client}": SIGN_IN_PER_CLIENT, "console-sign-in:*": SIGN_IN_PER_MINUTE},
        window=60.0,
    )
    if wait is not None:
        log.warning("console.sign_in_throttled")
        response = _sign_in_page(
            ctx, _next_path(next), 429, f"Too many sign-in attempts; try again in {math.ceil(wait)} s."
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    if not auth.operator_token_matches(token, ctx.settings):
        log.warning("console.sign_in_refused")
        return _sign_in_page(ctx, _next_path(next), 401, "That is not the operator token.")
    value, max_age = await auth.open_session(session, ctx.settings)
    response = see_other(_next_path(next))
    auth.set_cookie(response, ctx.settings, auth.COOKIE, value, max_age)
    auth.clear_cookie(response, ctx.settings, auth.SIGNIN_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(operator: CheckedOperator, ctx: ContextDep, session: SessionDep) -> Response:
    await auth.close_session(session, operator.cookie_value, ctx.settings)
    response = see_other("/console/sign-in")
    auth.clear_cookie(response, ctx.settings, auth.COOKIE)
    return response


# --- pages ----------------------------------------------------------------------------------------------


@router.get("/accounts")
async def accounts(operator: OperatorDep, session: SessionDep) -> Response:
    rows = await views.overview(session)
    return page("accounts.html", csrf=operator.csrf, rows=rows)


@router.get("/accounts/{account_id}")
async def account(
    operator: OperatorDep,
    ctx: ContextDep,
    session: SessionDep,
    integration: AccountDep,
    notice: str | None = None,
) -> Response:
    detail = await views.detail(session, integration)
    return page(
        "account.html",
        csrf=operator.csrf,
        d=detail,
        a=detail.row.view,
        auth_url=auth_url_for(ctx, integration.account_id),
        notice=NOTICES.get(notice or ""),
    )


@router.get("/runs/{run_id}.json")
async def run_progress(operator: OperatorDep, session: SessionDep, run_id: str) -> JSONResponse:
    found = await views.run_rows(session, run_id=run_id[:64])
    if not found:
        raise NotFound(f"No sync run {run_id[:64]}.", code="unknown_run")
    return JSONResponse(views.run_json(found[0]), headers={"Cache-Control": "no-store"})


# --- actions --------------------------------------------------------------------------------------------


@router.post("/accounts/{account_id}/sync")
async def start_sync(
    operator: CheckedOperator, ctx: ContextDep, session: SessionDep, integration: AccountDep
) -> Response:
    run, created = await fullsync.start_run(session, ctx.queue, integration)
    notice = "sync_started" if created else "sync_running"
    log.info("console.sync_started", account_id=integration.account_id, run_id=run.id, created=created)
    return see_other(f"/console/accounts/{integration.account_id}?notice={notice}#runs")


@router.post("/accounts/{account_id}/unisender")
async def connect_unisender(
    operator: CheckedOperator,
    ctx: ContextDep,
    session: SessionDep,
    integration: AccountDep,
    api_key: Annotated[str, Form(max_length=512)] = "",
    list_id: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    try:
        data = UnisenderIn(api_key=api_key, list_id=int(list_id) if list_id.strip() else None)
    except (ValueError, ValidationError) as exc:
        raise Unprocessable(
            "Give the Unisender API key, and a list id (digits) or nothing.", code="validation_error"
        ) from exc
    await unisender.connect_unisender(session=session, pc=ctx, integration=integration, data=data)
    return see_other(f"/console/accounts/{integration.account_id}?notice=unisender_connected#connection")


router.include_router(mapping_router)
router.include_router(deadletters_section.router)
