"""Operator views of contacts on both sides, and manual pushes to Unisender through the outbox."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.accounts.kommo import kommo_client_for
from app.accounts.unisender import unisender_client_for
from app.api.deps import AdminDep, ContextDep, SessionDep
from app.api.routing import AppRoute
from app.connectors.errors import AuthError, ConnectorError
from app.db.session import after_commit
from app.errors import NotFound, Unprocessable, UpstreamError
from app.sync import repository as repo
from app.sync.mapping import DesiredAddress, normalize_email, payload_hash
from app.worker import enqueue

router = APIRouter(tags=["contacts"], dependencies=[AdminDep], route_class=AppRoute)


def _upstream(provider: str, exc: ConnectorError) -> UpstreamError:
    if isinstance(exc, AuthError):
        return UpstreamError(
            f"{provider} refused our credentials: {exc.message}", code=f"{provider}_auth_failed"
        )
    return UpstreamError(f"{provider} call failed: {exc.message}", code=f"{provider}_unavailable")


@router.get("/kommo/contacts", summary="The account's contacts, read live from Kommo")
async def kommo_contacts(
    ctx: ContextDep,
    session: SessionDep,
    id: int = Query(gt=0, description="Kommo account id"),
    page: int = Query(1, ge=1, le=100_000),
    limit: int = Query(50, ge=1, le=250),
) -> dict[str, Any]:
    if await repo.get_integration(session, id) is None:
        raise NotFound(f"Account {id} is not registered.", code="unknown_account")
    client = await kommo_client_for(ctx, id)
    try:
        result = await client.list_contacts(page=page, limit=limit)
    except ConnectorError as exc:
        raise _upstream("kommo", exc) from exc
    return {
        "account_id": id,
        "page": page,
        "next_page": result.next_page,
        "contacts": [
            {
                "id": c.id,
                "name": c.name,
                "emails": list(c.emails),
                "tags": list(c.tags),
                "updated_at": c.updated_at,
            }
            for c in result.contacts
        ],
    }


@router.get("/unisender/contacts", summary="One address as Unisender holds it (z= is an alias of email)")
async def unisender_contact(
    ctx: ContextDep,
    session: SessionDep,
    id: int = Query(gt=0),
    email: str | None = Query(None, max_length=320),
    z: str | None = Query(None, max_length=320),
) -> dict[str, Any]:
    address = normalize_email(email or z or "")
    if address is None:
        raise Unprocessable("Give a valid address in email= (or z=).", code="invalid_email")
    if await repo.get_integration(session, id) is None:
        raise NotFound(f"Account {id} is not registered.", code="unknown_account")
    client, _ = await unisender_client_for(session, ctx, id)
    try:
        contact = await client.get_contact(address)
    except ConnectorError as exc:
        raise _upstream("unisender", exc) from exc
    if contact is None:
        raise NotFound(f"Unisender holds no contact {address}.", code="contact_not_found")
    consent = (await repo.consent_rows(session, id, [address])).get(address)
    return {
        "email": contact.email,
        "status": contact.status,
        "list_ids": list(contact.list_ids),
        "fields": contact.fields,
        "consent": consent.consent if consent else None,
    }


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(gt=0)
    emails: list[str] = Field(min_length=1, max_length=1000)
    delete: int = Field(0, ge=0, le=1)


@router.post(
    "/unisender/contacts",
    status_code=202,
    summary="Add or delete addresses in Unisender (through the outbox)",
)
async def push_contacts(body: PushRequest, ctx: ContextDep, session: SessionDep) -> dict[str, Any]:
    if await repo.get_integration(session, body.id) is None:
        raise NotFound(f"Account {body.id} is not registered.", code="unknown_account")
    invalid = [e for e in body.emails if normalize_email(e) is None]
    if invalid:
        raise Unprocessable(
            f"Invalid addresses: {', '.join(invalid[:5])}", code="invalid_email", extra={"invalid": invalid}
        )
    emails = sorted({normalize_email(e) or "" for e in body.emails})
    await repo.account_lock(session, body.id)
    consent = await repo.consent_rows(session, body.id, emails)
    skipped = [e for e in emails if e in consent and consent[e].consent == "unsubscribed" and not body.delete]
    wanted = [e for e in emails if e not in skipped]
    owners = await repo.live_owners(session, body.id, wanted)
    esp = await repo.get_esp(session, body.id)
    list_id = esp.list_id if esp else None
    rows = await repo.lock_outbox(session, body.id, wanted)
    fresh: list[tuple[str, dict[str, object], str]] = []
    for e in wanted:
        desired = DesiredAddress(
            email=e, delete=bool(body.delete), name=owners[e].name if e in owners else ""
        )
        payload = desired.payload()
        h = payload_hash(payload, list_id)
        row = rows.get(e)
        if row is None:
            fresh.append((e, payload, h))
        else:
            row.payload, row.payload_hash, row.status, row.attempts = payload, h, "pending", 0
            row.last_error = row.reject_code = None
    await repo.add_outbox(session, body.id, fresh)
    await session.flush()
    account_id = body.id
    after_commit(session, lambda: enqueue.flush_outbox(ctx.queue, account_id, delay=0))
    return {"account_id": body.id, "queued": wanted, "skipped_unsubscribed": skipped}
