"""Control API, data: seeding, contacts (create, update, read, delete, restore; with or without webhooks),
contact notes (read), custom fields, and the account's webhooks with their recent failures."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from ..api import create_response, kommo, read_json, update_response
from ..errors import SandboxError
from ..notes import note_json
from ..seed import seed_contacts
from ..serialize import contact_json
from .common import int_arg, json_body, str_arg

router = APIRouter()


@router.post("/_sandbox/accounts/{subdomain}/seed")
async def seed(subdomain: str, request: Request) -> JSONResponse:
    body = await json_body(request)
    count = int_arg(body, "count")
    if count is None or count < 0:
        raise SandboxError("count must be a non-negative integer")
    fire = body.get("fire_webhooks", False)
    custom_fields = body.get("custom_fields", False)
    if not isinstance(custom_fields, bool):
        raise SandboxError("custom_fields must be a boolean")
    ids = seed_contacts(
        kommo(request),
        subdomain,
        count,
        int_arg(body, "seed", 0),
        fire_webhooks=bool(fire),
        custom_fields=custom_fields,
    )
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


@router.get("/_sandbox/accounts/{subdomain}/notes")
async def control_notes(subdomain: str, request: Request) -> JSONResponse:
    """Every note of the account in id order (those of deleted contacts too), optionally of one contact."""
    state = kommo(request)
    account = state.account(subdomain)
    raw = request.query_params.get("entity_id")
    if raw is not None and not raw.isdigit():
        raise SandboxError("entity_id must be an integer")
    base = f"{str(request.base_url).rstrip('/')}/{subdomain}"
    notes = sorted(state.notes.of(account).values(), key=lambda n: n.id)
    return JSONResponse(
        [note_json(account, n, base) for n in notes if raw is None or n.entity_id == int(raw)]
    )


@router.post("/_sandbox/accounts/{subdomain}/custom_fields")
async def add_custom_field(subdomain: str, request: Request) -> JSONResponse:
    account = kommo(request).account(subdomain)
    body = await json_body(request)
    raw = body.get("enums")
    f = kommo(request).add_field(
        account,
        str_arg(body, "name"),
        str_arg(body, "type"),
        str_arg(body, "code", required=False),
        raw if isinstance(raw, list) else None,
    )
    return JSONResponse(
        {
            "id": f.id,
            "name": f.name,
            "type": f.type,
            "code": f.code,
            "enums": None if f.enums is None else [{"id": e.id, "value": e.value} for e in f.enums],
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
