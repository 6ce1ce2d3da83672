"""Kommo's OAuth consent page (www.kommo.com/oauth and {subdomain}.kommo.com/oauth): pick an account, Allow or
Deny; the decision redirects to the integration like the real page."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .api import kommo

router = APIRouter()


@router.get("/oauth")
async def consent(request: Request) -> Response:
    return _consent(request, None)


@router.get("/{subdomain}/oauth")
async def consent_on_account(subdomain: str, request: Request) -> Response:
    return _consent(request, subdomain)


def _consent(request: Request, subdomain: str | None) -> Response:
    state = kommo(request)
    q = request.query_params
    client_id = q.get("client_id", "")
    integ = state.oauth.integrations.get(client_id)
    if integ is None:
        return HTMLResponse(
            "<!doctype html><title>Kommo</title><p>Integration not found</p>", status_code=404
        )
    found = state.account_for_host(subdomain) if subdomain is not None else None
    accounts = [found[0]] if found is not None else list(state.accounts.values())
    e = html.escape
    hidden = (
        f'<input type="hidden" name="client_id" value="{e(client_id)}">'
        f'<input type="hidden" name="mode" value="{e(q.get("mode", "popup"))}">'
    )
    if "state" in q:
        hidden += f'<input type="hidden" name="state" value="{e(q["state"])}">'
    action = f"{str(request.base_url).rstrip('/')}/oauth/decision"
    rows = "".join(
        f'<li><form method="post" action="{e(action)}">{hidden}'
        f'<input type="hidden" name="subdomain" value="{e(a.subdomain)}">'
        f"<b>{e(a.name)}</b> ({e(state.host_of(a))}) "
        f'<button name="decision" value="allow">Allow</button> '
        f'<button name="decision" value="deny">Deny</button></form></li>'
        for a in accounts
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Kommo: grant access</title></head><body>"
        f"<h1>{e(integ.name)} requests access to your account</h1><ul>{rows or '<li>No accounts</li>'}</ul>"
        f"</body></html>"
    )
    return HTMLResponse(page)


@router.post("/oauth/decision")
async def decision(request: Request) -> Response:
    form = await request.form()
    state = kommo(request)

    def field(name: str) -> str | None:
        v = form.get(name)
        return v if isinstance(v, str) else None

    client_id, subdomain = field("client_id"), field("subdomain")
    if not client_id or not subdomain:
        return HTMLResponse("<p>Bad request</p>", status_code=400)
    url = state.installs.authorize(client_id, subdomain, field("state"), deny=field("decision") != "allow")
    return RedirectResponse(url, status_code=302)
