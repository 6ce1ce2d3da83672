"""Webhook subscriptions of an account (``/api/v4/webhooks``); delivery lives in ``sandbox.kommo.webhooks``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import responses as r
from ..oauth import AccessToken
from ..store import Account
from ..webhooks import KNOWN_SETTINGS, MAX_WEBHOOKS, valid_destination
from .common import guarded, kommo, q_error, read_json

router = APIRouter()


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
            return q_error("", "This value should be of type object.")
        if not valid_destination(data.get("destination")):
            return _invalid_url()
        settings = data.get("settings")
        if not isinstance(settings, list) or not settings or not all(isinstance(s, str) for s in settings):
            return q_error("settings", "This value should be of type array.")
        bad = [s for s in settings if s not in KNOWN_SETTINGS]
        if bad:
            return q_error("settings", "The value you selected is not a valid choice.", "NotSupportedChoice")
        sort = data.get("sort", 1)
        if not isinstance(sort, int) or isinstance(sort, bool):
            return q_error("sort", "This value should be of type int.")
        hooks = state.webhooks.get(account.id, [])
        if len(hooks) >= MAX_WEBHOOKS and all(h.destination != data["destination"] for h in hooks):
            return q_error("destination", f"Limit of {MAX_WEBHOOKS} webhooks per account", "LimitExceeded")
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
