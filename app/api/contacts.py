"""Operator views of contacts on both sides, and manual pushes to Unisender through the outbox."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.accounts.integrations import require_account
from app.api.deps import AdminDep, ContextDep, SessionDep, ValidAccount
from app.api.routing import AppRoute
from app.connectors.errors import AuthError, ConnectorError
from app.errors import NotFound, Unprocessable, UpstreamError
from app.sync import consent_repo, providers, service
from app.sync.mapping import normalize_email

router = APIRouter(tags=["contacts"], dependencies=[AdminDep], route_class=AppRoute)


class KommoContactOut(BaseModel):
    id: int
    name: str
    emails: list[str]
    tags: list[str]
    updated_at: int


class KommoContactsOut(BaseModel):
    account_id: int
    page: int
    next_page: int | None
    contacts: list[KommoContactOut]


class UnisenderContactOut(BaseModel):
    email: str
    status: str
    list_ids: list[int]
    fields: dict[str, str]
    consent: str | None = Field(description="What we recorded: subscribed, unsubscribed, or null (unknown)")


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(gt=0)
    emails: list[str] = Field(min_length=1, max_length=1000)
    delete: int = Field(0, ge=0, le=1)


class PushOut(BaseModel):
    account_id: int
    queued: list[str]
    skipped_unsubscribed: list[str]


def _upstream(provider: str, exc: ConnectorError) -> UpstreamError:
    if isinstance(exc, AuthError):
        return UpstreamError(
            f"{provider} refused our credentials: {exc.message}", code=f"{provider}_auth_failed"
        )
    return UpstreamError(f"{provider} call failed: {exc.message}", code=f"{provider}_unavailable")


@router.get("/kommo/contacts", summary="The account's contacts, read live from Kommo")
async def kommo_contacts(
    ctx: ContextDep,
    account: ValidAccount,
    page: int = Query(1, ge=1, le=100_000),
    limit: int = Query(50, ge=1, le=250),
) -> KommoContactsOut:
    client = await providers.crm_client(ctx, account.account_id)
    try:
        result = await client.list_contacts(page=page, limit=limit)
    except ConnectorError as exc:
        raise _upstream("kommo", exc) from exc
    contacts = [
        KommoContactOut(
            id=c.id, name=c.name, emails=list(c.emails), tags=list(c.tags), updated_at=c.updated_at
        )
        for c in result.contacts
    ]
    return KommoContactsOut(
        account_id=account.account_id, page=page, next_page=result.next_page, contacts=contacts
    )


@router.get("/unisender/contacts", summary="One address as Unisender holds it (z= is an alias of email)")
async def unisender_contact(
    ctx: ContextDep,
    session: SessionDep,
    account: ValidAccount,
    email: str | None = Query(None, max_length=320),
    z: str | None = Query(None, max_length=320),
) -> UnisenderContactOut:
    address = normalize_email(email or z or "")
    if address is None:
        raise Unprocessable("Give a valid address in email= (or z=).", code="invalid_email")
    client, _ = await providers.esp_client(session, ctx, account.account_id)
    try:
        contact = await client.get_contact(address)
    except ConnectorError as exc:
        raise _upstream("unisender", exc) from exc
    if contact is None:
        raise NotFound(f"Unisender holds no contact {address}.", code="contact_not_found")
    consent = (await consent_repo.consent_rows(session, account.account_id, [address])).get(address)
    return UnisenderContactOut(
        email=contact.email,
        status=contact.status,
        list_ids=list(contact.list_ids),
        fields=contact.fields,
        consent=consent.consent if consent else None,
    )


@router.post(
    "/unisender/contacts",
    status_code=202,
    summary="Add or delete addresses in Unisender (through the outbox)",
)
async def push_contacts(body: PushRequest, ctx: ContextDep, session: SessionDep) -> PushOut:
    await require_account(session, body.id)
    invalid = [e for e in body.emails if normalize_email(e) is None]
    if invalid:
        raise Unprocessable(
            f"Invalid addresses: {', '.join(invalid[:5])}", code="invalid_email", extra={"invalid": invalid}
        )
    emails = [normalize_email(e) or "" for e in body.emails]
    pushed = await service.push_addresses(session, ctx.queue, body.id, emails, delete=bool(body.delete))
    return PushOut(account_id=body.id, queued=pushed.queued, skipped_unsubscribed=pushed.skipped_unsubscribed)
