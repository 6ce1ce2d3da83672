"""The account and its contact custom-field definitions (``GET /api/v4/account``, ``.../contacts/custom_fields``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import responses as r
from ..oauth import AccessToken
from ..serialize import account_json, field_def_json
from ..store import Account
from .common import base_url, guarded, positive_int

router = APIRouter()


@router.get("/{subdomain}/api/v4/account")
async def get_account(subdomain: str, request: Request) -> Response:
    with_ = frozenset(request.query_params.get("with", "").split(","))
    return await guarded(
        request,
        subdomain,
        "GET /api/v4/account",
        lambda a, _t: r.hal(account_json(a, base_url(request, subdomain), with_)),
    )


@router.get("/{subdomain}/api/v4/contacts/custom_fields")
async def custom_fields(subdomain: str, request: Request) -> Response:
    def handler(account: Account, _t: AccessToken) -> Response:
        base = base_url(request, subdomain)
        page = positive_int(request.query_params.get("page"), 1) or 1
        limit = min(positive_int(request.query_params.get("limit"), 50) or 50, 50)
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
