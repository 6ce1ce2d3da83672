"""The OAuth token endpoint: ``authorization_code`` and ``refresh_token`` grants, JSON, form or multipart."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import responses as r
from ..state import KommoSandboxState
from .common import apply_faults, kommo, where

router = APIRouter()


@router.post("/{subdomain}/oauth2/access_token")
async def access_token(subdomain: str, request: Request) -> Response:
    state = kommo(request)
    endpoint = "POST /oauth2/access_token"
    resp, grant = await _token(request, state, subdomain)
    state.stats.record(endpoint, resp.status_code, *where(state, subdomain))
    if resp.status_code == 200:
        state.stats.grants[grant] += 1
    else:
        state.stats.token_errors[grant or "?"] += 1
    return resp


async def _token(request: Request, state: KommoSandboxState, subdomain: str) -> tuple[Response, str]:
    found = state.account_for_host(subdomain)
    if found is None:
        return r.problem(404, f"Cannot POST https://{where(state, subdomain)[1]}/oauth2/access_token"), ""
    account = found[0]
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    body: dict[str, Any]
    if ctype == "application/x-www-form-urlencoded":
        body = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    elif ctype == "multipart/form-data":
        form = await request.form()
        body = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        try:
            loaded = json.loads(raw) if raw.strip() else None
        except ValueError:
            loaded = None
        if not isinstance(loaded, dict):
            return r.oauth_problem(400, "Check the request body"), ""
        body = loaded
    grant = body.get("grant_type")
    grant_s = grant if isinstance(grant, str) else ""
    fault = await apply_faults(state, "POST /oauth2/access_token")
    if fault is not None:
        return fault, grant_s
    if grant not in ("authorization_code", "refresh_token"):
        return r.oauth_problem(
            400,
            "Check the `grant_type` parameter",
            title="Неподдерживаемый тип авторизации",
            detail="Тип авторизации не поддерживается сервером авторизации",
        ), grant_s
    for key in ("client_id", "client_secret"):
        if not isinstance(body.get(key), str) or not body[key]:
            return r.oauth_problem(400, f"Check the `{key}` parameter"), grant_s
    integ = state.oauth.integrations.get(body["client_id"])
    if integ is None or not hmac.compare_digest(integ.client_secret.encode(), body["client_secret"].encode()):
        return r.invalid_client(), grant_s
    redirect_uri = body.get("redirect_uri")
    if redirect_uri is not None and redirect_uri != integ.redirect_uri:
        return r.oauth_problem(400, "Invalid redirect URI"), grant_s
    now = state.clock.now()
    cfg = state.config
    if grant == "authorization_code":
        if redirect_uri is None:
            return r.oauth_problem(400, "Check the `redirect_uri` parameter"), grant_s
        code_s = body.get("code")
        if not isinstance(code_s, str) or not code_s:
            return r.oauth_problem(400, "Check the `code` parameter"), grant_s
        code = state.oauth.codes.get(code_s)
        if code is None:
            return r.oauth_problem(400, "Cannot decrypt the authorization code"), grant_s
        if code.client_id != integ.client_id:
            return r.oauth_problem(400, "Authorization code was not issued to this client"), grant_s
        if code.account_id != account.id:
            return r.oauth_problem(400, "Authorization code was not issued for this account"), grant_s
        if code.used:
            return r.oauth_problem(400, "Authorization code has been revoked"), grant_s
        if code.expires_at <= now:
            return r.oauth_problem(400, "Authorization code has expired"), grant_s
        code.used = True
        parent = None
    else:
        rt_s = body.get("refresh_token")
        if not isinstance(rt_s, str) or not rt_s:
            return r.oauth_problem(400, "Check the `refresh_token` parameter"), grant_s
        rt = state.oauth.refresh.get(rt_s)
        if rt is None:
            return r.oauth_problem(401, "Cannot decrypt the refresh token"), grant_s
        if rt.client_id != integ.client_id or rt.account_id != account.id:
            return r.oauth_problem(401, "Token is not linked to client"), grant_s
        if rt.revoked or (rt.spent and not cfg.refresh_grace):
            return r.oauth_problem(401, "Token has been revoked"), grant_s
        if rt.expires_at <= now:
            return r.oauth_problem(401, "Token has expired"), grant_s
        rt.spent = True
        if cfg.refresh_grace and rt.parent is not None:
            prev = state.oauth.refresh.get(rt.parent)
            if prev is not None:
                prev.revoked = True  # R1 stays valid until R2 is redeemed
        parent = rt.token
    access, refresh = state.oauth.issue(
        integ.client_id,
        account.id,
        now=now,
        access_ttl=cfg.access_token_ttl,
        refresh_ttl=cfg.refresh_token_ttl,
        base_domain=account.domain or cfg.base_domain,
        grant_type=grant,
        parent=parent,
    )
    assert refresh is not None
    body_out = {
        "token_type": "Bearer",
        "expires_in": cfg.access_token_ttl,
        "server_time": now,
        "access_token": access.token,
        "refresh_token": refresh.token,
    }
    return Response(r.dumps(body_out), media_type="application/json"), grant_s
