"""Control API under ``/_sandbox/...`` (JSON in, JSON out; no auth) and the OAuth consent page."""

from __future__ import annotations

import html
import json
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .api import create_response, kommo, read_json, update_response
from .limits import Stats
from .seed import seed_contacts
from .serialize import contact_json
from .state import SandboxError
from .store import ENUM_TYPES, FIELD_TYPES, FieldDef, FieldEnum

router = APIRouter()


def _err(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise SandboxError("body must be a JSON object")
    return data


def _str_arg(body: dict[str, Any], key: str, *, required: bool = True) -> Any:
    v = body.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise SandboxError(f"{key} must be a non-empty string")
    return v


def _int_arg(body: dict[str, Any], key: str, default: int | None = None) -> Any:
    v = body.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise SandboxError(f"{key} must be an integer")
    return v


# --- setup ------------------------------------------------------------------------------------------------------


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
    body = await _body(request)
    try:
        state.config.update(body)
    except ValueError as exc:
        return _err(str(exc))
    if "webhook_seed" in body:
        state.dispatcher.reseed(state.config.webhook_seed)
    if "delivery_log_max" in body:
        state.dispatcher.log = deque(state.dispatcher.log, maxlen=state.config.delivery_log_max)
    return JSONResponse(state.config.as_dict())


@router.post("/_sandbox/integrations")
async def create_integration(request: Request) -> JSONResponse:
    body = await _body(request)
    integ = kommo(request).create_integration(
        _str_arg(body, "redirect_uri"),
        client_id=_str_arg(body, "client_id", required=False),
        client_secret=_str_arg(body, "client_secret", required=False),
        disable_hook_url=_str_arg(body, "disable_hook_url", required=False),
        name=_str_arg(body, "name", required=False) or "Integration",
    )
    return JSONResponse(integ.as_dict(), status_code=201)


@router.get("/_sandbox/integrations")
async def list_integrations(request: Request) -> JSONResponse:
    return JSONResponse([i.as_dict() for i in kommo(request).oauth.integrations.values()])


@router.post("/_sandbox/accounts")
async def create_account(request: Request) -> JSONResponse:
    body = await _body(request)
    state = kommo(request)
    acct = state.create_account(
        _str_arg(body, "subdomain"),
        _str_arg(body, "name", required=False),
        _int_arg(body, "id"),
        _str_arg(body, "domain", required=False),
    )
    return JSONResponse(_account_dict(acct, state.config.base_domain), status_code=201)


@router.get("/_sandbox/accounts")
async def list_accounts(request: Request) -> JSONResponse:
    state = kommo(request)
    return JSONResponse([_account_dict(a, state.config.base_domain) for a in state.accounts.values()])


@router.post("/_sandbox/authorize")
async def authorize(request: Request) -> JSONResponse:
    body = await _body(request)
    deny = body.get("deny", False)
    if not isinstance(deny, bool):
        raise SandboxError("deny must be a boolean")
    url = kommo(request).authorize(
        _str_arg(body, "client_id"),
        _str_arg(body, "subdomain"),
        _str_arg(body, "state", required=False),
        deny=deny,
    )
    code = parse_qs(urlsplit(url).query).get("code", [None])[0]
    return JSONResponse({"redirect_url": url, "code": code})


@router.post("/_sandbox/install_widget")
async def install_widget(request: Request) -> JSONResponse:
    body = await _body(request)
    return JSONResponse(
        await kommo(request).install_widget(_str_arg(body, "client_id"), _str_arg(body, "subdomain"))
    )


@router.post("/_sandbox/widget_token")
async def widget_token(request: Request) -> JSONResponse:
    body = await _body(request)
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
        kommo(request).widget_token(
            _str_arg(body, "client_id"),
            _str_arg(body, "subdomain"),
            is_admin=is_admin,
            claims=claims,
            secret=_str_arg(body, "secret", required=False),
            alg=alg,
        )
    )


@router.post("/_sandbox/tokens")
async def tokens(request: Request) -> JSONResponse:
    body = await _body(request)
    out = kommo(request).issue_tokens(
        _str_arg(body, "client_id"),
        _str_arg(body, "subdomain"),
        long_lived_ttl=_int_arg(body, "long_lived_ttl"),
    )
    return JSONResponse(out)


@router.post("/_sandbox/uninstall")
async def uninstall(request: Request) -> JSONResponse:
    body = await _body(request)
    return JSONResponse(
        await kommo(request).uninstall(_str_arg(body, "client_id"), _str_arg(body, "subdomain"))
    )


# --- data -------------------------------------------------------------------------------------------------------


@router.post("/_sandbox/accounts/{subdomain}/seed")
async def seed(subdomain: str, request: Request) -> JSONResponse:
    body = await _body(request)
    count = _int_arg(body, "count")
    if count is None or count < 0:
        raise SandboxError("count must be a non-negative integer")
    fire = body.get("fire_webhooks", False)
    ids = seed_contacts(kommo(request), subdomain, count, _int_arg(body, "seed", 0), fire_webhooks=bool(fire))
    return JSONResponse(
        {"created": len(ids), "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}
    )


def _fire(request: Request) -> bool:
    return request.query_params.get("webhooks", "1") not in ("0", "false", "no")


@router.post("/_sandbox/accounts/{subdomain}/contacts")
async def control_create(subdomain: str, request: Request) -> Response:
    state = kommo(request)
    account = state.account(subdomain)
    return create_response(
        request, state, account, subdomain, await read_json(request), fire_webhooks=_fire(request)
    )


@router.patch("/_sandbox/accounts/{subdomain}/contacts")
async def control_update(subdomain: str, request: Request) -> Response:
    state = kommo(request)
    account = state.account(subdomain)
    return update_response(
        request, state, account, subdomain, await read_json(request), fire_webhooks=_fire(request)
    )


@router.get("/_sandbox/accounts/{subdomain}/contacts/{cid}")
async def control_get(subdomain: str, cid: int, request: Request) -> JSONResponse:
    state = kommo(request)
    account = state.account(subdomain)
    contact = account.contacts.get(cid)
    if contact is None:
        raise SandboxError(f"no contact {cid}", 404)
    out = contact_json(account, contact, f"{str(request.base_url).rstrip('/')}/{subdomain}")
    out["is_deleted"] = contact.deleted
    return JSONResponse(out)


@router.post("/_sandbox/accounts/{subdomain}/contacts/{cid}/delete")
async def control_delete(subdomain: str, cid: int, request: Request) -> JSONResponse:
    state = kommo(request)
    c = state.delete_contact(state.account(subdomain), cid, fire_webhooks=_fire(request))
    return JSONResponse({"id": c.id, "is_deleted": True})


@router.post("/_sandbox/accounts/{subdomain}/contacts/{cid}/restore")
async def control_restore(subdomain: str, cid: int, request: Request) -> JSONResponse:
    state = kommo(request)
    c = state.restore_contact(state.account(subdomain), cid, fire_webhooks=_fire(request))
    return JSONResponse({"id": c.id, "is_deleted": False, "updated_at": c.updated_at})


@router.post("/_sandbox/accounts/{subdomain}/custom_fields")
async def add_custom_field(subdomain: str, request: Request) -> JSONResponse:
    account = kommo(request).account(subdomain)
    body = await _body(request)
    ftype = _str_arg(body, "type")
    if ftype not in FIELD_TYPES:
        raise SandboxError(f"type must be one of {sorted(FIELD_TYPES)}")
    code = _str_arg(body, "code", required=False)
    if code is not None and account.field_by_code(code) is not None:
        raise SandboxError(f"code {code!r} exists", 409)
    enums = None
    if ftype in ENUM_TYPES:
        raw = body.get("enums")
        if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and v for v in raw):
            raise SandboxError("enums must be a non-empty list of strings for this type")
        enums = [
            FieldEnum(kommo(request).next_enum_id(), v, 500 + i, v if ftype == "multitext" else None)
            for i, v in enumerate(raw)
        ]
    fid = max(account.fields) + 2
    f = FieldDef(fid, _str_arg(body, "name"), ftype, code, 500 + len(account.fields), enums)
    account.fields[fid] = f
    return JSONResponse(
        {
            "id": f.id,
            "name": f.name,
            "type": f.type,
            "code": f.code,
            "enums": None if enums is None else [{"id": e.id, "value": e.value} for e in enums],
        },
        status_code=201,
    )


@router.get("/_sandbox/accounts/{subdomain}/webhooks")
async def control_webhooks(subdomain: str, request: Request) -> JSONResponse:
    state = kommo(request)
    account = state.account(subdomain)
    return JSONResponse(
        [{**h.as_json(), "recent_failures": len(h.failures)} for h in state.webhooks.get(account.id, [])]
    )


# --- faults, clock, stats, deliveries, reset ----------------------------------------------------------------------


@router.get("/_sandbox/faults")
async def get_faults(request: Request) -> JSONResponse:
    return JSONResponse(kommo(request).faults.as_dict())


@router.post("/_sandbox/faults")
async def set_faults(request: Request) -> JSONResponse:
    state = kommo(request)
    try:
        state.faults.configure(await _body(request))
    except ValueError as exc:
        return _err(str(exc))
    return JSONResponse(state.faults.as_dict())


@router.delete("/_sandbox/faults")
async def clear_faults(request: Request) -> JSONResponse:
    state = kommo(request)
    state.faults.configure(
        {
            "latency_ms": 0,
            "latency_jitter_ms": 0,
            "error_rate": 0,
            "burst_429": 0,
            "error_status": 500,
            "seed": 0,
        }
    )
    state.limiter.reset()
    return JSONResponse(state.faults.as_dict())


@router.get("/_sandbox/clock")
async def get_clock(request: Request) -> JSONResponse:
    clock = kommo(request).clock
    return JSONResponse({"now": clock.now(), "offset": clock.offset})


@router.post("/_sandbox/clock/advance")
async def advance_clock(request: Request) -> JSONResponse:
    body = await _body(request)
    seconds = body.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise SandboxError("seconds must be a number")
    clock = kommo(request).clock
    clock.advance(seconds)
    return JSONResponse({"now": clock.now(), "offset": clock.offset})


@router.get("/_sandbox/stats")
async def get_stats(request: Request) -> JSONResponse:
    return JSONResponse(kommo(request).stats.as_dict())


@router.delete("/_sandbox/stats")
async def reset_stats(request: Request) -> JSONResponse:
    state = kommo(request)
    state.stats = Stats()
    return JSONResponse(state.stats.as_dict())


@router.get("/_sandbox/deliveries")
async def deliveries(request: Request) -> JSONResponse:
    log = list(kommo(request).dispatcher.log)
    wid = request.query_params.get("webhook_id")
    if wid is not None and wid.isdigit():
        log = [e for e in log if e["webhook_id"] == int(wid)]
    limit = request.query_params.get("limit")
    if limit is not None and limit.isdigit():
        log = log[-int(limit) :]
    return JSONResponse(log)


@router.delete("/_sandbox/deliveries")
async def clear_deliveries(request: Request) -> JSONResponse:
    kommo(request).dispatcher.log.clear()
    return JSONResponse({"cleared": True})


@router.post("/_sandbox/deliveries/drain")
async def drain(request: Request) -> JSONResponse:
    body = await _body(request)
    timeout = body.get("timeout", 10)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise SandboxError("timeout must be a number")
    dispatcher = kommo(request).dispatcher
    ok = await dispatcher.drain(float(timeout))
    return JSONResponse({"drained": ok, "outstanding": dispatcher.outstanding})


@router.post("/_sandbox/reset")
async def reset(request: Request) -> JSONResponse:
    await kommo(request).reset()
    return JSONResponse({"reset": True})


# --- consent page (www.kommo.com/oauth and {subdomain}.kommo.com/oauth) ---------------------------------------------


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
    url = state.authorize(client_id, subdomain, field("state"), deny=field("decision") != "allow")
    return RedirectResponse(url, status_code=302)
