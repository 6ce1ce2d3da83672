"""The account, its contact custom-field definitions and its users (``GET /api/v4/account``,
``.../contacts/custom_fields``, ``.../users``, ``.../users/{id}``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import responses as r
from ..oauth import AccessToken
from ..serialize import account_json, field_def_json, user_json
from ..store import Account
from .common import base_url, guarded, hal_page, kommo, page_args

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
        paging = page_args(request, kommo(request))
        if isinstance(paging, Response):
            return paging
        base = base_url(request, subdomain)
        defs = sorted(account.fields.values(), key=lambda f: (f.sort, f.id))
        page, limit = paging
        items = [field_def_json(account, f, base) for f in defs]  # an account has tens of fields, not more
        return hal_page(base, "/api/v4/contacts/custom_fields", "custom_fields", items, page, limit)

    return await guarded(request, subdomain, "GET /api/v4/contacts/custom_fields", handler)


@router.get("/{subdomain}/api/v4/users")
async def users(subdomain: str, request: Request) -> Response:
    def handler(account: Account, _t: AccessToken) -> Response:
        if not account.current_user().is_admin:
            return _insufficient_rights()
        paging = page_args(request, kommo(request))
        if isinstance(paging, Response):
            return paging
        base = base_url(request, subdomain)
        page, limit = paging
        listed = [user_json(u, base) for u in account.users]
        return hal_page(base, "/api/v4/users", "users", listed, page, limit)

    return await guarded(request, subdomain, "GET /api/v4/users", handler)


@router.get("/{subdomain}/api/v4/users/{uid}")
async def user(subdomain: str, uid: str, request: Request) -> Response:
    def handler(account: Account, _t: AccessToken) -> Response:
        if not account.current_user().is_admin:
            return _insufficient_rights()
        found = next((u for u in account.users if str(u.id) == uid), None)
        if found is None:
            return r.no_content()  # as a missing contact: Kommo's docs do not say
        return r.hal(user_json(found, base_url(request, subdomain)))

    return await guarded(request, subdomain, "GET /api/v4/users/{id}", handler)


def _insufficient_rights() -> Response:
    # Kommo lets only admins read users (spec §9.1); the token acts as the account's current user.
    return r.problem(403, "Insufficient rights")
