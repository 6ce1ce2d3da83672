"""Contacts: the list (filters, order, pages), one contact, batch create and update."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import responses as r
from ..oauth import AccessToken
from ..serialize import contact_json
from ..state import KommoSandboxState
from ..store import Account
from .common import base_url, guarded, kommo, positive_int, q_error, read_json, updated_window, where

router = APIRouter()

_ID_FILTER = re.compile(r"^filter\[id\](\[\d*\])?$")


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
                    return q_error("filter.id", "This value should be of type int.")
                ids.append(int(part))
        else:
            params[key] = value
    page = positive_int(params.get("page"), 1)
    if page is None:
        return q_error("page", "This value should be a positive integer.", "InvalidValue")
    limit = positive_int(params.get("limit"), cfg.default_limit)
    if limit is None:
        return q_error("limit", "This value should be a positive integer.", "InvalidValue")
    if limit > cfg.max_limit:
        if cfg.over_limit == "reject":
            return r.problem(422, f"Limit of {cfg.max_limit} per page")
        limit = cfg.max_limit
    span = updated_window(params)
    if isinstance(span, Response):
        return span
    lo, hi, order_key, direction = span
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
        return q_error("", "This value should be of type array.")
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
        return q_error("", "This value should be of type array.")
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
            return q_error("", "This value should be of type object.")
        return update_response(request, kommo(request), account, subdomain, [{**data, "id": int(cid)}])

    if _parse_id(cid) is None:
        return r.problem(
            404, f"Cannot PATCH https://{where(kommo(request), subdomain)[1]}/api/v4/contacts/{cid}"
        )
    return await guarded(request, subdomain, "PATCH /api/v4/contacts/{id}", handler)
