"""Kommo API v4 routes served under ``/{host}/...`` (or ``/{subdomain}/...`` for accounts on the base domain):
token endpoint, account, contacts, custom fields, webhooks. The route parameter ``subdomain`` is that path
segment, a host or a bare subdomain (``KommoSandboxState.account_for_host``)."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from . import responses as r
from .oauth import AccessToken
from .serialize import account_json, contact_json, field_def_json
from .state import KommoSandboxState
from .store import Account
from .webhooks import KNOWN_SETTINGS, MAX_WEBHOOKS, valid_destination

router = APIRouter()

_ID_FILTER = re.compile(r"^filter\[id\](\[\d*\])?$")


def kommo(request: Request) -> KommoSandboxState:
    state: KommoSandboxState = request.app.state.kommo
    return state


def base_url(request: Request, subdomain: str) -> str:
    """Where this account's API lives on the sandbox, under the segment it was called with (the real form is
    https://{host})."""
    return f"{str(request.base_url).rstrip('/')}/{subdomain}"


def where(state: KommoSandboxState, segment: str) -> tuple[str, str]:
    """``(subdomain, host)`` a path segment names, for stats and error messages (known account or not)."""
    subdomain, dot, domain = segment.lower().partition(".")
    return subdomain, f"{subdomain}.{domain if dot else state.config.base_domain}"


Handler = Callable[[Account, AccessToken], Awaitable[Response] | Response]


async def guarded(request: Request, subdomain: str, endpoint: str, handler: Handler) -> Response:
    """Account lookup, Bearer auth, rate limit / block, injected faults; then ``handler``; then stats."""
    state = kommo(request)
    resp = await _guard(request, state, subdomain)
    if isinstance(resp, Response):
        state.stats.record(endpoint, resp.status_code, *where(state, subdomain))
        return resp
    account, token = resp
    result = handler(account, token)
    out = await result if isinstance(result, Awaitable) else result
    state.stats.record(endpoint, out.status_code, *where(state, subdomain))
    return out


async def _guard(
    request: Request, state: KommoSandboxState, subdomain: str
) -> Response | tuple[Account, AccessToken]:
    found = state.account_for_host(subdomain)
    if found is None:
        return r.problem(
            404,
            f"Cannot {request.method} https://{where(state, subdomain)[1]}"
            f"{request.url.path.removeprefix('/' + subdomain)}",
        )
    account = found[0]
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    token = state.oauth.access.get(value.strip()) if scheme.lower() == "bearer" else None
    if (
        token is None
        or token.revoked
        or token.account_id != account.id
        or token.expires_at <= state.clock.now()
    ):
        return r.unauthorized()
    verdict = state.limiter.check(token.client_id, state.config, state.stats)
    if verdict == 403:
        state.stats.blocked += 1
        return r.problem(403, "Access denied")
    if verdict == 429:
        state.stats.rate_limited += 1
        return r.too_many_requests(state.config.retry_after, state.config.retry_after_header)
    fault = await apply_faults(state)
    return fault if fault is not None else (account, token)


async def apply_faults(state: KommoSandboxState) -> Response | None:
    faults = state.faults
    delay = faults.delay()
    if delay:
        state.stats.faults["latency"] += 1
        await asyncio.sleep(delay)
    if faults.burst_429 > 0:
        faults.burst_429 -= 1
        state.stats.faults["burst_429"] += 1
        return r.too_many_requests(state.config.retry_after, state.config.retry_after_header)
    if faults.error_rate and faults.rng.random() < faults.error_rate:
        state.stats.faults["error"] += 1
        return r.internal_error(faults.error_status)
    return None


async def read_json(request: Request) -> Any | Response:
    raw = await request.body()
    if not raw.strip():
        return r.blank_request()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return r.problem(400, "Syntax error, malformed JSON")
    if data in ([], {}, None):
        return r.blank_request()
    return data


def _q_error(path: str, detail: str, code: str = "InvalidType") -> Response:
    return r.validation_failed(
        [{"request_id": "0", "errors": [{"code": code, "path": path, "detail": detail}]}]
    )


def _positive_int(raw: str | None, default: int) -> int | None:
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        return None
    return v if v >= 1 else None


# --- OAuth token endpoint --------------------------------------------------------------------------------------


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
    fault = await apply_faults(state)
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


# --- account ---------------------------------------------------------------------------------------------------


@router.get("/{subdomain}/api/v4/account")
async def get_account(subdomain: str, request: Request) -> Response:
    with_ = frozenset(request.query_params.get("with", "").split(","))
    return await guarded(
        request,
        subdomain,
        "GET /api/v4/account",
        lambda a, _t: r.hal(account_json(a, base_url(request, subdomain), with_)),
    )


# --- contacts --------------------------------------------------------------------------------------------------


@router.get("/{subdomain}/api/v4/contacts")
async def list_contacts(subdomain: str, request: Request) -> Response:
    return await guarded(
        request,
        subdomain,
        "GET /api/v4/contacts",
        lambda a, _t: _list_contacts(request, kommo(request), a, subdomain),
    )


def _list_contacts(request: Request, state: KommoSandboxState, account: Account, subdomain: str) -> Response:
    cfg = state.config
    items = request.query_params.multi_items()
    params: dict[str, str] = {}
    ids: list[int] | None = None
    for key, value in items:
        if _ID_FILTER.match(key):
            ids = ids or []
            for part in value.split(","):
                if not part.strip().isdigit():
                    return _q_error("filter.id", "This value should be of type int.")
                ids.append(int(part))
        else:
            params[key] = value
    page = _positive_int(params.get("page"), 1)
    if page is None:
        return _q_error("page", "This value should be a positive integer.", "InvalidValue")
    limit = _positive_int(params.get("limit"), cfg.default_limit)
    if limit is None:
        return _q_error("limit", "This value should be a positive integer.", "InvalidValue")
    if limit > cfg.max_limit:
        if cfg.over_limit == "reject":
            return r.problem(422, f"Limit of {cfg.max_limit} per page")
        limit = cfg.max_limit
    bounds: list[int | None] = []
    for edge in ("from", "to"):
        raw = params.get(f"filter[updated_at][{edge}]")
        if raw is None or raw == "":
            bounds.append(None)
        elif raw.isdigit():
            bounds.append(int(raw))
        else:
            return _q_error(f"filter.updated_at.{edge}", "This value should be of type int.")
    order_key, direction = "id", "asc"
    for key in ("order[updated_at]", "order[id]"):
        if key in params:
            direction = params[key].lower()
            if direction not in ("asc", "desc"):
                return _q_error(
                    "order", "The value you selected is not a valid choice.", "NotSupportedChoice"
                )
            order_key = key[6:-1]
            break
    lo, hi = bounds
    # Candidates: either live ids in id order, or (updated_at, id) pairs in updated_at order.
    id_seq: Sequence[int] | None = None
    upd_seq: Sequence[tuple[int, int]] | None = None
    if ids is not None:
        id_seq = sorted({i for i in ids if account.live(i) is not None})
    elif lo is not None or hi is not None:
        upd_seq = account.updated_range(lo, hi)
    elif order_key == "updated_at":
        upd_seq = account.by_updated()
    else:
        id_seq = account.live_ids
    if upd_seq is not None and order_key == "id":
        id_seq, upd_seq = sorted(t[1] for t in upd_seq), None
    needle = params.get("query", "").strip().lower()
    cmap = account.contacts
    if needle:
        if id_seq is not None:
            id_seq = [i for i in id_seq if cmap[i].matches(needle)]
        elif upd_seq is not None:
            upd_seq = [t for t in upd_seq if cmap[t[1]].matches(needle)]
    if order_key == "updated_at" and id_seq is not None:
        upd_seq, id_seq = sorted((cmap[i].updated_at, i) for i in id_seq), None
    n = len(id_seq) if id_seq is not None else len(upd_seq or ())
    start = (page - 1) * limit
    if start >= n:
        return r.no_content()
    lo_i, hi_i = (start, start + limit) if direction == "asc" else (max(0, n - start - limit), n - start)
    if id_seq is not None:
        window = list(id_seq[lo_i:hi_i])
    else:
        assert upd_seq is not None
        window = [t[1] for t in upd_seq[lo_i:hi_i]]
    if direction == "desc":
        window.reverse()
    base = base_url(request, subdomain)
    with_ = frozenset(params.get("with", "").split(","))
    page_items = [contact_json(account, cmap[i], base, with_) for i in window]
    keep = [(k, v) for k, v in items if k not in ("page", "limit")]

    def href(p: int) -> dict[str, str]:
        return {
            "href": f"{base}/api/v4/contacts?{urlencode([*keep, ('page', str(p)), ('limit', str(limit))])}"
        }

    links = {"self": href(page)}
    if start + limit < n:
        links["next"] = href(page + 1)
    if page > 1:
        links["prev"] = href(page - 1)
    return r.hal({"_page": page, "_links": links, "_embedded": {"contacts": page_items}})


@router.get("/{subdomain}/api/v4/contacts/custom_fields")
async def custom_fields(subdomain: str, request: Request) -> Response:
    def handler(account: Account, _t: AccessToken) -> Response:
        base = base_url(request, subdomain)
        page = _positive_int(request.query_params.get("page"), 1) or 1
        limit = min(_positive_int(request.query_params.get("limit"), 50) or 50, 50)
        defs = sorted(account.fields.values(), key=lambda f: (f.sort, f.id))
        window = defs[(page - 1) * limit : page * limit]
        if not window:
            return r.no_content()
        page_count = max(1, -(-len(defs) // limit))
        links: dict[str, Any] = {
            "self": {"href": f"{base}/api/v4/contacts/custom_fields?page={page}&limit={limit}"}
        }
        if page < page_count:
            links["next"] = {"href": f"{base}/api/v4/contacts/custom_fields?page={page + 1}&limit={limit}"}
        if page > 1:
            links["prev"] = {"href": f"{base}/api/v4/contacts/custom_fields?page={page - 1}&limit={limit}"}
        return r.hal(
            {
                "_total_items": len(defs),
                "_page": page,
                "_page_count": page_count,
                "_links": links,
                "_embedded": {"custom_fields": [field_def_json(account, f, base) for f in window]},
            }
        )

    return await guarded(request, subdomain, "GET /api/v4/contacts/custom_fields", handler)


def _parse_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


@router.get("/{subdomain}/api/v4/contacts/{cid}")
async def get_contact(subdomain: str, cid: str, request: Request) -> Response:
    def handler(account: Account, _t: AccessToken) -> Response:
        i = _parse_id(cid)
        contact = account.live(i) if i is not None else None
        if contact is None:
            return r.no_content()
        with_ = frozenset(request.query_params.get("with", "").split(","))
        return r.hal(contact_json(account, contact, base_url(request, subdomain), with_))

    if _parse_id(cid) is None:
        return r.problem(
            404, f"Cannot GET https://{where(kommo(request), subdomain)[1]}/api/v4/contacts/{cid}"
        )
    return await guarded(request, subdomain, "GET /api/v4/contacts/{id}", handler)


@router.post("/{subdomain}/api/v4/contacts")
async def create_contacts(subdomain: str, request: Request) -> Response:
    async def handler(account: Account, _t: AccessToken) -> Response:
        return create_response(request, kommo(request), account, subdomain, await read_json(request))

    return await guarded(request, subdomain, "POST /api/v4/contacts", handler)


def create_response(
    request: Request,
    state: KommoSandboxState,
    account: Account,
    subdomain: str,
    data: Any,
    *,
    fire_webhooks: bool = True,
) -> Response:
    if isinstance(data, Response):
        return data
    if not isinstance(data, list):
        return _q_error("", "This value should be of type array.")
    if len(data) > state.config.max_batch:
        return r.problem(422, f"Limit of {state.config.max_batch} per page")
    created, rids, errors = state.create_contacts(account, data, fire_webhooks=fire_webhooks)
    if errors:
        return r.validation_failed(errors)
    base = base_url(request, subdomain)
    return r.hal(
        {
            "_links": {"self": {"href": f"{base}/api/v4/contacts"}},
            "_embedded": {
                "contacts": [
                    {
                        "id": c.id,
                        "request_id": rid,
                        "_links": {"self": {"href": f"{base}/api/v4/contacts/{c.id}"}},
                    }
                    for c, rid in zip(created, rids, strict=True)
                ]
            },
        }
    )


def update_response(
    request: Request,
    state: KommoSandboxState,
    account: Account,
    subdomain: str,
    data: Any,
    *,
    fire_webhooks: bool = True,
) -> Response:
    if isinstance(data, Response):
        return data
    if not isinstance(data, list):
        return _q_error("", "This value should be of type array.")
    if len(data) > state.config.max_batch:
        return r.problem(422, f"Limit of {state.config.max_batch} per page")
    updated, rids, errors = state.update_contacts(account, data, fire_webhooks=fire_webhooks)
    if errors:
        return r.validation_failed(errors)
    base = base_url(request, subdomain)
    out = []
    for c, rid in zip(updated, rids, strict=True):
        item: dict[str, Any] = {"id": c.id, "name": c.name, "updated_at": c.updated_at}
        if rid is not None:
            item["request_id"] = rid
        item["_links"] = {"self": {"href": f"{base}/api/v4/contacts/{c.id}"}}
        out.append(item)
    return r.hal({"_links": {"self": {"href": f"{base}/api/v4/contacts"}}, "_embedded": {"contacts": out}})


@router.patch("/{subdomain}/api/v4/contacts")
async def update_contacts(subdomain: str, request: Request) -> Response:
    async def handler(account: Account, _t: AccessToken) -> Response:
        return update_response(request, kommo(request), account, subdomain, await read_json(request))

    return await guarded(request, subdomain, "PATCH /api/v4/contacts", handler)


@router.patch("/{subdomain}/api/v4/contacts/{cid}")
async def update_contact(subdomain: str, cid: str, request: Request) -> Response:
    async def handler(account: Account, _t: AccessToken) -> Response:
        data = await read_json(request)
        if isinstance(data, Response):
            return data
        if not isinstance(data, dict):
            return _q_error("", "This value should be of type object.")
        return update_response(request, kommo(request), account, subdomain, [{**data, "id": int(cid)}])

    if _parse_id(cid) is None:
        return r.problem(
            404, f"Cannot PATCH https://{where(kommo(request), subdomain)[1]}/api/v4/contacts/{cid}"
        )
    return await guarded(request, subdomain, "PATCH /api/v4/contacts/{id}", handler)


# --- webhooks --------------------------------------------------------------------------------------------------


def _invalid_url() -> Response:
    # Verbatim shape of the captured answer (it has no "type" key).
    body = {
        "validation-errors": [
            {
                "request_id": "0",
                "errors": [
                    {
                        "code": "57c2f299-1154-4870-89bb-ef3b1f5ad229",
                        "path": "destination.destination",
                        "detail": "Invalid URL",
                    }
                ],
            }
        ],
        "title": "Bad Request",
        "status": 400,
        "detail": "Request validation failed",
    }
    return Response(r.dumps(body), status_code=400, media_type=r.PROBLEM)


@router.post("/{subdomain}/api/v4/webhooks")
async def add_webhook(subdomain: str, request: Request) -> Response:
    async def handler(account: Account, _t: AccessToken) -> Response:
        state = kommo(request)
        data = await read_json(request)
        if isinstance(data, Response):
            return data
        if not isinstance(data, dict):
            return _q_error("", "This value should be of type object.")
        if not valid_destination(data.get("destination")):
            return _invalid_url()
        settings = data.get("settings")
        if not isinstance(settings, list) or not settings or not all(isinstance(s, str) for s in settings):
            return _q_error("settings", "This value should be of type array.")
        bad = [s for s in settings if s not in KNOWN_SETTINGS]
        if bad:
            return _q_error("settings", "The value you selected is not a valid choice.", "NotSupportedChoice")
        sort = data.get("sort", 1)
        if not isinstance(sort, int) or isinstance(sort, bool):
            return _q_error("sort", "This value should be of type int.")
        hooks = state.webhooks.get(account.id, [])
        if len(hooks) >= MAX_WEBHOOKS and all(h.destination != data["destination"] for h in hooks):
            return _q_error("destination", f"Limit of {MAX_WEBHOOKS} webhooks per account", "LimitExceeded")
        hook = state.subscribe(account, data["destination"], list(dict.fromkeys(settings)), sort)
        return r.hal(hook.as_json())

    return await guarded(request, subdomain, "POST /api/v4/webhooks", handler)


@router.get("/{subdomain}/api/v4/webhooks")
async def list_webhooks(subdomain: str, request: Request) -> Response:
    def handler(account: Account, _t: AccessToken) -> Response:
        hooks = kommo(request).webhooks.get(account.id, [])
        dest = request.query_params.get("filter[destination]")
        if dest is not None:
            hooks = [h for h in hooks if h.destination == dest]
        if not hooks:
            return r.no_content()
        return r.hal({"_total_items": len(hooks), "_embedded": {"webhooks": [h.as_json() for h in hooks]}})

    return await guarded(request, subdomain, "GET /api/v4/webhooks", handler)


@router.delete("/{subdomain}/api/v4/webhooks")
async def delete_webhook(subdomain: str, request: Request) -> Response:
    async def handler(account: Account, _t: AccessToken) -> Response:
        data = await read_json(request)
        if isinstance(data, Response):
            return data
        if not isinstance(data, dict) or not valid_destination(data.get("destination")):
            return _invalid_url()
        kommo(request).unsubscribe(account, data["destination"])
        return r.no_content()

    return await guarded(request, subdomain, "DELETE /api/v4/webhooks", handler)
