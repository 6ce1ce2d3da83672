"""Control API for what happens outside the API: campaigns and their activity, edits and signups made in
Unisender's UI, and the files of async tasks. Every change reaches the account's hooks like an API change."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from sandbox.unisender.background import Background
from sandbox.unisender.campaigns import Campaign, Rates, plan, recipients, run
from sandbox.unisender.hooks import CONTACT_DATA_EVENT, HookDispatcher, event, list_events
from sandbox.unisender.methods.records import join_list, normalise_email
from sandbox.unisender.methods.tasks import task_file, task_status
from sandbox.unisender.state import Account, Contact, SandboxState

router = APIRouter(prefix="/_sandbox")

_Rate = Field(default=0.0, ge=0.0, le=1.0)


class RatesIn(BaseModel):
    """Per-recipient probabilities; ``delivered`` defaults to what the bounces leave."""

    delivered: float | None = Field(default=None, ge=0.0, le=1.0)
    opened: float = _Rate
    clicked: float = _Rate
    soft_bounce: float = _Rate
    hard_bounce: float = _Rate
    complaint: float = _Rate
    unsubscribe: float = _Rate


class CampaignIn(BaseModel):
    """Body of ``POST /_sandbox/accounts/{api_key}/campaigns``."""

    list_id: int
    subject: str = "Sandbox campaign"
    rates: RatesIn = Field(default_factory=RatesIn)
    links: list[str] = Field(default_factory=list, max_length=100)
    seed: int = 0
    duration_s: float = Field(default=1.0, ge=0.0, le=3600.0)
    sender_name: str = "Sandbox"
    sender_email: str = "sender@example.com"


class FieldEditIn(BaseModel):
    """Body of ``POST …/contacts/{email}/fields``: new values by field name ("" clears a value)."""

    fields: dict[str, str] = Field(min_length=1)
    notify: bool = True


class SignupIn(BaseModel):
    """Body of ``POST …/lists/{list_id}/signups``: an address subscribes itself through a form."""

    email: str
    fields: dict[str, str] = Field(default_factory=dict)
    notify: bool = True


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.unisender
    return state


def _dispatcher(request: Request) -> HookDispatcher:
    dispatcher: HookDispatcher = request.app.state.unisender_hooks
    return dispatcher


def _account(request: Request, api_key: str) -> Account:
    account = _state(request).accounts.get(api_key)
    if account is None:
        raise HTTPException(404, f"no account with api_key {api_key!r}")
    return account


def _campaign(account: Account, campaign_id: int) -> Campaign:
    campaign = account.campaigns.get(campaign_id)
    if campaign is None:
        raise HTTPException(404, f"no campaign {campaign_id}")
    return campaign


def _field_ids(account: Account, values: dict[str, str]) -> dict[int, str]:
    unknown = sorted(name for name in values if name not in account.fields_by_name)
    if unknown:
        raise HTTPException(400, f"unknown fields {unknown}")
    return {account.fields_by_name[name].id: value for name, value in values.items()}


# --- campaigns -------------------------------------------------------------------------------------------


@router.post("/accounts/{api_key}/campaigns")
async def create_campaign(request: Request, api_key: str, body: CampaignIn) -> dict[str, Any]:
    """Send a campaign to the list's active members now; its activity plays out over ``duration_s``."""
    state = _state(request)
    account = _account(request, api_key)
    if body.list_id not in account.lists:
        raise HTTPException(404, f"no list {body.list_id}")
    r = body.rates
    bounces = r.hard_bounce + r.soft_bounce
    delivered = max(0.0, 1.0 - bounces) if r.delivered is None else r.delivered
    if bounces + delivered > 1.0 + 1e-9 or r.complaint + r.unsubscribe > 1.0 + 1e-9:
        raise HTTPException(
            400, "hard_bounce + soft_bounce + delivered and complaint + unsubscribe must be <= 1"
        )
    if r.clicked > 0 and not body.links:
        raise HTTPException(400, "rates.clicked needs links")
    campaign_id = state.new_campaign_id()
    campaign = Campaign(
        id=campaign_id,
        list_id=body.list_id,
        subject=body.subject,
        sender_name=body.sender_name,
        sender_email=body.sender_email,
        message_id=900_000 + campaign_id,
        created=state.config.clock(),
        duration_s=body.duration_s,
        seed=body.seed,
        links=list(body.links),
        rates=Rates(delivered, r.opened, r.clicked, r.soft_bounce, r.hard_bounce, r.complaint, r.unsubscribe),
    )
    plan(campaign, recipients(account, body.list_id))
    account.campaigns[campaign.id] = campaign
    background: Background = request.app.state.unisender_background
    background.spawn(run(state, _dispatcher(request), account, campaign))
    return {
        "campaign_id": campaign.id,
        "message_id": campaign.message_id,
        "recipients": len(campaign.facts),
        "steps": len(campaign.steps),
    }


@router.get("/accounts/{api_key}/campaigns")
async def list_campaigns(request: Request, api_key: str) -> dict[str, Any]:
    """Every campaign of the account with its progress."""
    account = _account(request, api_key)
    return {
        "campaigns": [
            {**c.summary(), "recipients": len(c.facts), "steps": len(c.steps), "played": c.emitted}
            for c in account.campaigns.values()
        ]
    }


@router.get("/accounts/{api_key}/campaigns/{campaign_id}/facts")
async def campaign_facts(request: Request, api_key: str, campaign_id: int) -> dict[str, Any]:
    """What the seed decided for every recipient (the stats equal these once ``status`` is completed)."""
    campaign = _campaign(_account(request, api_key), campaign_id)
    return {
        "campaign_id": campaign.id,
        "list_id": campaign.list_id,
        "status": campaign.status,
        "steps": len(campaign.steps),
        "played": campaign.emitted,
        "addresses": {email: fact.as_json() for email, fact in campaign.facts.items()},
    }


# --- changes made in Unisender's UI ------------------------------------------------------------------------


@router.post("/accounts/{api_key}/contacts/{email}/fields")
async def edit_fields(request: Request, api_key: str, email: str, body: FieldEditIn) -> dict[str, Any]:
    """Someone edits the contact's field values in Unisender's UI: ``contact_data_change`` with the changed
    values (none changed: no event)."""
    state = _state(request)
    account = _account(request, api_key)
    contact = account.contacts_by_email.get(email.strip().lower())
    if contact is None:
        raise HTTPException(404, f"no contact {email!r}")
    changed: dict[str, str] = {}
    for fid, value in _field_ids(account, body.fields).items():
        if contact.fields.get(fid, "") == value:
            continue
        if value:
            contact.fields[fid] = value
        else:
            contact.fields.pop(fid, None)
        changed[account.fields[fid].name] = value
    if changed and body.notify:
        data = {"email": contact.email, "fields": changed}
        _dispatcher(request).emit(account, [event(CONTACT_DATA_EVENT, state.now(), data)])
    return {"changed": changed, "contact": account.contact_json(contact)}


@router.post("/accounts/{api_key}/lists/{list_id}/signups")
async def signup(request: Request, api_key: str, list_id: int, body: SignupIn) -> dict[str, Any]:
    """An address subscribes itself to a list through a form (confirmed): created ``active`` if new, made
    ``active`` in the list (its own action, so even after an unsubscribe); ``subscribe`` ``{"email",
    "list_id"}`` when the membership was not active before."""
    state = _state(request)
    account = _account(request, api_key)
    if list_id not in account.lists:
        raise HTTPException(404, f"no list {list_id}")
    email = normalise_email(body.email)
    if email is None:
        raise HTTPException(400, f"invalid email {body.email!r}")
    values = _field_ids(account, body.fields)
    now = state.now()
    contact = account.contacts_by_email.get(email)
    created = contact is None
    if contact is None:
        contact = Contact(
            person_id=state.new_person_id(),
            email=email,
            phone=None,
            status="active",
            availability="available",
            phone_status="active",
            phone_availability="available",
            added_at=now,
        )
        account.contacts_by_email[email] = contact
        account.contacts_by_id[contact.person_id] = contact
    contact.status = "active"
    contact.fields.update({fid: v for fid, v in values.items() if v})
    membership = contact.lists.get(list_id)
    changed = membership is None or membership.status != "active"
    if membership is None:
        join_list(account, contact, list_id, "active", now)
    else:
        membership.status = "active"
    if changed and body.notify:
        _dispatcher(request).emit(account, list_events("subscribe", now, email, [list_id]))
    return {"created": created, "changed": changed, "contact": account.contact_json(contact)}


# --- async task files --------------------------------------------------------------------------------------


def _file(request: Request, task_uuid: str, gz: bool) -> Response:
    task = _state(request).exports.get(task_uuid)
    if task is None or bool(task["gzip"]) != gz:
        raise HTTPException(404, "no such file")
    if task_status(task) != "completed":
        raise HTTPException(404, "the task has not completed yet")
    media = "application/gzip" if gz else "text/csv; charset=utf-8"
    return Response(task_file(task), media_type=media)


@router.get("/exports/{task_uuid}.csv")
async def export_file(request: Request, task_uuid: str) -> Response:
    """The CSV file of an async task (header row of column names, then one row per contact/recipient)."""
    return _file(request, task_uuid, gz=False)


@router.get("/exports/{task_uuid}.csv.gz")
async def export_file_gz(request: Request, task_uuid: str) -> Response:
    """The same, gzipped (``export_gzip``)."""
    return _file(request, task_uuid, gz=True)


@router.get("/tasks")
async def tasks(request: Request, api_key: str | None = None) -> dict[str, Any]:
    """Async tasks: type, status, polls, and the notify_url answer (status code or error name)."""
    return {
        "tasks": [
            {
                "task_uuid": t["task_uuid"],
                "api_key": t["api_key"],
                "task_type": t["task_type"],
                "status": task_status(t),
                "polls": t["polls"],
                "notify_url": t["notify_url"],
                "notified": t["notified"],
            }
            for t in _state(request).exports.values()
            if api_key is None or t["api_key"] == api_key
        ]
    }
