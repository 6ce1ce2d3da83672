"""Contact notes (spec §11): add (batch or under one contact), list (all or one contact's), one note, edit."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from .. import responses as r
from ..notes import Note, note_href, note_json
from ..oauth import AccessToken
from ..state import KommoSandboxState
from ..store import Account
from .common import base_url, guarded, kommo, page_args, q_error, read_json, updated_window, where

router = APIRouter()

_ID_FILTER = re.compile(r"^filter\[id\](\[\d*\])?$")
_TYPE_FILTER = re.compile(r"^filter\[note_type\](\[\d*\])?$")


def _parse_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


def _not_found(request: Request, subdomain: str) -> Response:
    path = request.url.path.removeprefix("/" + subdomain)
    return r.problem(404, f"Cannot {request.method} https://{where(kommo(request), subdomain)[1]}{path}")


# --- writes ---------------------------------------------------------------------------------------------------


def _write(
    request: Request,
    account: Account,
    subdomain: str,
    data: Any,
    *,
    update: bool,
    entity_id: int | None = None,
) -> Response:
    """Batch add or edit: ≤ ``max_batch`` items else 422, all-or-nothing 400 on any invalid item."""
    state = kommo(request)
    if isinstance(data, Response):
        return data
    if isinstance(data, dict) and entity_id is not None and not update:
        data = [data]  # ``/contacts/{id}/notes`` also takes one object
    if not isinstance(data, list):
        return q_error("", "This value should be of type array.")
    if len(data) > state.config.max_batch:
        return r.problem(422, f"Limit of {state.config.max_batch} per page")
    write = state.notes.update if update else state.notes.create
    notes, rids, errors = write(
        account, data, now=state.clock.now(), max_text=state.config.note_text_max, entity_id=entity_id
    )
    if errors:
        return r.validation_failed(errors)
    base = base_url(request, subdomain)
    listed = "/api/v4/contacts/notes" if entity_id is None else f"/api/v4/contacts/{entity_id}/notes"
    return r.hal(
        {
            "_links": {"self": {"href": f"{base}{listed}"}},
            "_embedded": {
                "notes": [
                    {
                        "id": n.id,
                        "entity_id": n.entity_id,
                        "request_id": rid,
                        "_links": {"self": {"href": note_href(base, n)}},
                    }
                    for n, rid in zip(notes, rids, strict=True)
                ]
            },
        }
    )


@router.post("/{subdomain}/api/v4/contacts/notes")
async def add_notes(subdomain: str, request: Request) -> Response:
    async def handler(account: Account, _t: AccessToken) -> Response:
        return _write(request, account, subdomain, await read_json(request), update=False)

    return await guarded(request, subdomain, "POST /api/v4/contacts/notes", handler)


@router.patch("/{subdomain}/api/v4/contacts/notes")
async def edit_notes(subdomain: str, request: Request) -> Response:
    async def handler(account: Account, _t: AccessToken) -> Response:
        return _write(request, account, subdomain, await read_json(request), update=True)

    return await guarded(request, subdomain, "PATCH /api/v4/contacts/notes", handler)


@router.post("/{subdomain}/api/v4/contacts/{cid}/notes")
async def add_contact_notes(subdomain: str, cid: str, request: Request) -> Response:
    entity_id = _parse_id(cid)
    if entity_id is None:
        return _not_found(request, subdomain)

    async def handler(account: Account, _t: AccessToken) -> Response:
        data = await read_json(request)
        return _write(request, account, subdomain, data, update=False, entity_id=entity_id)

    return await guarded(request, subdomain, "POST /api/v4/contacts/{id}/notes", handler)


@router.patch("/{subdomain}/api/v4/contacts/{cid}/notes/{nid}")
async def edit_contact_note(subdomain: str, cid: str, nid: str, request: Request) -> Response:
    entity_id, note_id = _parse_id(cid), _parse_id(nid)
    if entity_id is None or note_id is None:
        return _not_found(request, subdomain)

    async def handler(account: Account, _t: AccessToken) -> Response:
        data = await read_json(request)
        if isinstance(data, Response):
            return data
        if not isinstance(data, dict):
            return q_error("", "This value should be of type object.")
        item = {**data, "id": note_id}
        return _write(request, account, subdomain, [item], update=True, entity_id=entity_id)

    return await guarded(request, subdomain, "PATCH /api/v4/contacts/{id}/notes/{id}", handler)


# --- reads ----------------------------------------------------------------------------------------------------


def _list(
    request: Request, state: KommoSandboxState, account: Account, subdomain: str, entity_id: int | None
) -> Response:
    paging = page_args(request, state)
    if isinstance(paging, Response):
        return paging
    page, limit = paging
    items = request.query_params.multi_items()
    ids: set[int] | None = None
    types: set[str] | None = None
    params: dict[str, str] = {}
    for key, value in items:
        if _ID_FILTER.match(key):
            ids = ids if ids is not None else set()
            for part in value.split(","):
                if not part.strip().isdigit():
                    return q_error("filter.id", "This value should be of type int.")
                ids.add(int(part))
        elif _TYPE_FILTER.match(key):
            types = types if types is not None else set()
            types.update(t.strip() for t in value.split(",") if t.strip())
        else:
            params[key] = value
    span = updated_window(params)
    if isinstance(span, Response):
        return span
    lo, hi, order_key, direction = span

    def wanted(n: Note) -> bool:
        return (
            (entity_id is None or n.entity_id == entity_id)
            and (ids is None or n.id in ids)
            and (types is None or n.note_type in types)
            and (lo is None or n.updated_at >= lo)
            and (hi is None or n.updated_at <= hi)
            and account.live(n.entity_id) is not None  # a deleted contact's notes are hidden with it
        )

    found = [n for n in state.notes.of(account).values() if wanted(n)]
    found.sort(key=(lambda n: (n.updated_at, n.id)) if order_key == "updated_at" else (lambda n: n.id))
    if direction == "desc":
        found.reverse()
    window = found[(page - 1) * limit : page * limit]
    if not window:
        return r.no_content()
    base = base_url(request, subdomain)
    path = "/api/v4/contacts/notes" if entity_id is None else f"/api/v4/contacts/{entity_id}/notes"
    keep = [(k, v) for k, v in items if k not in ("page", "limit")]

    def href(p: int) -> dict[str, str]:
        return {"href": f"{base}{path}?{urlencode([*keep, ('page', str(p)), ('limit', str(limit))])}"}

    links = {"self": href(page)}
    if page * limit < len(found):
        links["next"] = href(page + 1)
    if page > 1:
        links["prev"] = href(page - 1)
    notes = [note_json(account, n, base) for n in window]
    return r.hal({"_page": page, "_links": links, "_embedded": {"notes": notes}})


@router.get("/{subdomain}/api/v4/contacts/notes")
async def list_notes(subdomain: str, request: Request) -> Response:
    return await guarded(
        request,
        subdomain,
        "GET /api/v4/contacts/notes",
        lambda a, _t: _list(request, kommo(request), a, subdomain, None),
    )


@router.get("/{subdomain}/api/v4/contacts/{cid}/notes")
async def list_contact_notes(subdomain: str, cid: str, request: Request) -> Response:
    entity_id = _parse_id(cid)
    if entity_id is None:
        return _not_found(request, subdomain)
    return await guarded(
        request,
        subdomain,
        "GET /api/v4/contacts/{id}/notes",
        lambda a, _t: _list(request, kommo(request), a, subdomain, entity_id),
    )


@router.get("/{subdomain}/api/v4/contacts/{cid}/notes/{nid}")
async def get_note(subdomain: str, cid: str, nid: str, request: Request) -> Response:
    entity_id, note_id = _parse_id(cid), _parse_id(nid)
    if entity_id is None or note_id is None:
        return _not_found(request, subdomain)

    def handler(account: Account, _t: AccessToken) -> Response:
        note = kommo(request).notes.visible(account, note_id, entity_id)
        if note is None:
            return r.no_content()
        return r.hal(note_json(account, note, base_url(request, subdomain)))

    return await guarded(request, subdomain, "GET /api/v4/contacts/{id}/notes/{id}", handler)
