"""Control API, setup: the summary, config, integrations, accounts, and installing an integration the way a
Kommo user does (consent redirect, widget install, widget JWT, direct tokens, uninstall)."""

from __future__ import annotations

from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from ..api import kommo
from ..errors import SandboxError
from .common import err, int_arg, json_body, str_arg

router = APIRouter()


@router.get("/_sandbox")
async def summary(request: Request) -> JSONResponse:
    state = kommo(request)
    return JSONResponse(
        {
            "config": state.config.as_dict(),
            "integrations": [i.as_dict() for i in state.oauth.integrations.values()],
            "accounts": [_account_dict(a, state.config.base_domain) for a in state.accounts.values()],
            "clock": {"now": state.clock.now(), "offset": state.clock.offset},
        }
    )


def _account_dict(a: Any, base_domain: str) -> dict[str, Any]:
    return {
        "id": a.id,
        "subdomain": a.subdomain,
        "host": a.host(base_domain),
        "name": a.name,
        "contacts": len(a.live_ids),
        "deleted_contacts": len(a.contacts) - len(a.live_ids),
    }


@router.get("/_sandbox/config")
async def get_config(request: Request) -> JSONResponse:
    return JSONResponse(kommo(request).config.as_dict())


@router.patch("/_sandbox/config")
async def patch_config(request: Request) -> JSONResponse:
    state = kommo(request)
    body = await json_body(request)
    try:
        state.config.update(body)
    except ValueError as exc:
        return err(str(exc))
    if "webhook_seed" in body:
        state.dispatcher.reseed(state.config.webhook_seed)
    if "delivery_log_max" in body:
        state.dispatcher.log = deque(state.dispatcher.log, maxlen=state.config.delivery_log_max)
    return JSONResponse(state.config.as_dict())


@router.post("/_sandbox/integrations")
async def create_integration(request: Request) -> JSONResponse:
    body = await json_body(request)
    integ = kommo(request).create_integration(
        str_arg(body, "redirect_uri"),
        client_id=str_arg(body, "client_id", required=False),
        client_secret=str_arg(body, "client_secret", required=False),
        disable_hook_url=str_arg(body, "disable_hook_url", required=False),
        name=str_arg(body, "name", required=False) or "Integration",
    )
    return JSONResponse(integ.as_dict(), status_code=201)


@router.get("/_sandbox/integrations")
async def list_integrations(request: Request) -> JSONResponse:
    return JSONResponse([i.as_dict() for i in kommo(request).oauth.integrations.values()])


@router.post("/_sandbox/accounts")
async def create_account(request: Request) -> JSONResponse:
    body = await json_body(request)
    state = kommo(request)
    acct = state.create_account(
        str_arg(body, "subdomain"),
        str_arg(body, "name", required=False),
        int_arg(body, "id"),
        str_arg(body, "domain", required=False),
    )
    return JSONResponse(_account_dict(acct, state.config.base_domain), status_code=201)


@router.patch("/_sandbox/accounts/{subdomain}")
async def patch_account(subdomain: str, request: Request) -> JSONResponse:
    """``{current_user_admin}``: false makes the tokens' user a non-admin (``/api/v4/users`` answers 403)."""
    state = kommo(request)
    account = state.account(subdomain)
    body = await json_body(request)
    if "current_user_admin" in body:
        admin = body["current_user_admin"]
        if not isinstance(admin, bool):
            raise SandboxError("current_user_admin must be a boolean")
        account.current_user().is_admin = admin
    return JSONResponse(
        {
            **_account_dict(account, state.config.base_domain),
            "current_user_admin": account.current_user().is_admin,
        }
    )


@router.post("/_sandbox/accounts/{subdomain}/users")
async def add_user(subdomain: str, request: Request) -> JSONResponse:
    state = kommo(request)
    account = state.account(subdomain)
    body = await json_body(request)
    is_admin = body.get("is_admin", False)
    if not isinstance(is_admin, bool):
        raise SandboxError("is_admin must be a boolean")
    user = state.add_user(
        account, str_arg(body, "name"), email=str_arg(body, "email", required=False), is_admin=is_admin
    )
    return JSONResponse(
        {"id": user.id, "name": user.name, "email": user.email, "is_admin": user.is_admin}, status_code=201
    )


@router.get("/_sandbox/accounts")
async def list_accounts(request: Request) -> JSONResponse:
    state = kommo(request)
    return JSONResponse([_account_dict(a, state.config.base_domain) for a in state.accounts.values()])


@router.post("/_sandbox/authorize")
async def authorize(request: Request) -> JSONResponse:
    body = await json_body(request)
    deny = body.get("deny", False)
    if not isinstance(deny, bool):
        raise SandboxError("deny must be a boolean")
    url = kommo(request).installs.authorize(
        str_arg(body, "client_id"),
        str_arg(body, "subdomain"),
        str_arg(body, "state", required=False),
        deny=deny,
    )
    code = parse_qs(urlsplit(url).query).get("code", [None])[0]
    return JSONResponse({"redirect_url": url, "code": code})


@router.post("/_sandbox/install_widget")
async def install_widget(request: Request) -> JSONResponse:
    body = await json_body(request)
    return JSONResponse(
        await kommo(request).installs.install_widget(str_arg(body, "client_id"), str_arg(body, "subdomain"))
    )


@router.post("/_sandbox/widget_token")
async def widget_token(request: Request) -> JSONResponse:
    body = await json_body(request)
    is_admin = body.get("is_admin", True)
    claims = body.get("claims")
    alg = body.get("alg", "HS256")
    if not isinstance(is_admin, bool):
        raise SandboxError("is_admin must be a boolean")
    if claims is not None and not isinstance(claims, dict):
        raise SandboxError("claims must be an object")
    if not isinstance(alg, str):
        raise SandboxError("alg must be a string")
    return JSONResponse(
        kommo(request).installs.widget_token(
            str_arg(body, "client_id"),
            str_arg(body, "subdomain"),
            is_admin=is_admin,
            claims=claims,
            secret=str_arg(body, "secret", required=False),
            alg=alg,
        )
    )


@router.post("/_sandbox/tokens")
async def tokens(request: Request) -> JSONResponse:
    body = await json_body(request)
    out = kommo(request).installs.issue_tokens(
        str_arg(body, "client_id"),
        str_arg(body, "subdomain"),
        long_lived_ttl=int_arg(body, "long_lived_ttl"),
    )
    return JSONResponse(out)


@router.post("/_sandbox/uninstall")
async def uninstall(request: Request) -> JSONResponse:
    body = await json_body(request)
    return JSONResponse(
        await kommo(request).installs.uninstall(str_arg(body, "client_id"), str_arg(body, "subdomain"))
    )
