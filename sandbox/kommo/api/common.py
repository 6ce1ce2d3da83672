"""What every Kommo API route shares: the account a path segment names, Bearer auth, rate limit and block,
injected faults, JSON bodies and Kommo's validation-error shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.responses import Response

from .. import responses as r
from ..oauth import AccessToken
from ..state import KommoSandboxState
from ..store import Account


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
    resp = await _guard(request, state, subdomain, endpoint)
    if isinstance(resp, Response):
        state.stats.record(endpoint, resp.status_code, *where(state, subdomain))
        return resp
    account, token = resp
    result = handler(account, token)
    out = await result if isinstance(result, Awaitable) else result
    if (
        request.method in ("POST", "PATCH")
        and out.status_code < 300
        and state.faults.lost_answers > 0
        and state.faults.applies(endpoint)
    ):
        # Done, but the caller never hears so: a gateway timing out in front of a slow Kommo.
        state.faults.lost_answers -= 1
        state.stats.faults["lost_answer"] += 1
        out = r.internal_error(504)
    state.stats.record(endpoint, out.status_code, *where(state, subdomain))
    return out


async def _guard(
    request: Request, state: KommoSandboxState, subdomain: str, endpoint: str
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
    fault = await apply_faults(state, endpoint)
    return fault if fault is not None else (account, token)


async def apply_faults(state: KommoSandboxState, endpoint: str) -> Response | None:
    faults = state.faults
    if not faults.applies(endpoint):
        return None
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


def q_error(path: str, detail: str, code: str = "InvalidType") -> Response:
    return r.validation_failed(
        [{"request_id": "0", "errors": [{"code": code, "path": path, "detail": detail}]}]
    )


def page_args(request: Request, state: KommoSandboxState) -> tuple[int, int] | Response:
    """``page`` and ``limit`` of a paged list, as the contact list reads them (default 50, max 250), or the
    error answer."""
    cfg = state.config
    page = positive_int(request.query_params.get("page"), 1)
    if page is None:
        return q_error("page", "This value should be a positive integer.", "InvalidValue")
    limit = positive_int(request.query_params.get("limit"), cfg.default_limit)
    if limit is None:
        return q_error("limit", "This value should be a positive integer.", "InvalidValue")
    if limit > cfg.max_limit:
        if cfg.over_limit == "reject":
            return r.problem(422, f"Limit of {cfg.max_limit} per page")
        limit = cfg.max_limit
    return page, limit


def hal_page(base: str, path: str, key: str, items: list[Any], page: int, limit: int) -> Response:
    """One page of a list with ``_total_items``/``_page_count`` (custom fields, users): ``_links.next`` only
    when another page exists, ``prev`` after the first; 204 when the page is empty."""
    window = items[(page - 1) * limit : page * limit]
    if not window:
        return r.no_content()
    page_count = max(1, -(-len(items) // limit))

    def href(p: int) -> dict[str, str]:
        return {"href": f"{base}{path}?page={p}&limit={limit}"}

    links = {"self": href(page)}
    if page < page_count:
        links["next"] = href(page + 1)
    if page > 1:
        links["prev"] = href(page - 1)
    return r.hal(
        {
            "_total_items": len(items),
            "_page": page,
            "_page_count": page_count,
            "_links": links,
            "_embedded": {key: window},
        }
    )


def positive_int(raw: str | None, default: int) -> int | None:
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        return None
    return v if v >= 1 else None


def updated_window(params: dict[str, str]) -> tuple[int | None, int | None, str, str] | Response:
    """``filter[updated_at][from|to]`` and ``order[updated_at|id]`` of a list request (contacts and notes read
    them alike): (from, to, order key, direction), or the 400 Kommo answers for a bad one."""
    bounds: list[int | None] = []
    for edge in ("from", "to"):
        raw = params.get(f"filter[updated_at][{edge}]")
        if raw is None or raw == "":
            bounds.append(None)
        elif raw.isdigit():
            bounds.append(int(raw))
        else:
            return q_error(f"filter.updated_at.{edge}", "This value should be of type int.")
    order_key, direction = "id", "asc"
    for key in ("order[updated_at]", "order[id]"):
        if key in params:
            direction = params[key].lower()
            if direction not in ("asc", "desc"):
                return q_error("order", "The value you selected is not a valid choice.", "NotSupportedChoice")
            order_key = key[6:-1]
            break
    return bounds[0], bounds[1], order_key, direction
