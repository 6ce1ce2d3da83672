"""Control API of the sandbox (``/_sandbox/...``, JSON): accounts, inspection, simulated contacts, faults, stats
(campaigns, edits in Unisender's UI and task files: ``control_activity``)."""

from __future__ import annotations

import re
from itertools import islice, pairwise
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from sandbox.unisender.hooks import (
    HOOK_EVENTS,
    HookDispatcher,
    account_unsubscribe_events,
    event,
    list_events,
)
from sandbox.unisender.limits import FAULT_KINDS, FaultPlan
from sandbox.unisender.state import Account, Contact, Membership, SandboxState

router = APIRouter(prefix="/_sandbox")

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class AccountIn(BaseModel):
    """Body of ``POST /_sandbox/accounts``."""

    api_key: str | None = None
    login: str | None = None


class AccessIn(BaseModel):
    """Body of ``POST /_sandbox/accounts/{api_key}/access``."""

    denied: bool = True
    methods: list[str] | None = None


class ContactActionIn(BaseModel):
    """Body of the simulated contact actions; ``list_id`` null = account-wide. ``campaign_id``: the click
    happened in a letter of that campaign (the unsubscribe also yields the letter's ``email_status``).
    ``notify`` false: the state changes but no hook is called (a test then delivers the events itself, e.g.
    in another documented layout)."""

    list_id: int | None = None
    campaign_id: int | None = None
    notify: bool = True


class HookEventIn(BaseModel):
    """One event for ``POST /_sandbox/accounts/{api_key}/hook-events`` (time: now when omitted)."""

    event_name: str
    event_data: dict[str, Any]
    event_time: str | None = None


class HookEventsIn(BaseModel):
    events: list[HookEventIn] = Field(min_length=1, max_length=1000)


class FaultsIn(BaseModel):
    """Body of ``POST /_sandbox/faults``."""

    rate: float = Field(ge=0.0, le=1.0)
    kinds: list[str] = Field(min_length=1)
    seed: int = 0
    method: str | None = None
    api_key: str | None = None
    count: int | None = Field(default=None, ge=0)
    hang_seconds: float | None = Field(default=None, ge=0.0)
    hang_applies: bool | None = None


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.unisender
    return state


def _account(request: Request, api_key: str) -> Account:
    account = _state(request).accounts.get(api_key)
    if account is None:
        raise HTTPException(404, f"no account with api_key {api_key!r}")
    return account


def _contact(account: Account, email: str) -> Contact:
    contact = account.contacts_by_email.get(email.strip().lower())
    if contact is None:
        raise HTTPException(404, f"no contact {email!r}")
    return contact


def _account_json(account: Account) -> dict[str, Any]:
    return {
        "api_key": account.api_key,
        "login": account.login,
        "access_denied": account.access_denied,
        "denied_methods": sorted(account.denied_methods),
        "contacts": len(account.contacts_by_id),
        "lists": [
            {"id": lst.id, "title": lst.title, "members": len(lst.members)} for lst in account.lists.values()
        ],
        "fields": [{"id": f.id, "name": f.name, "type": f.type} for f in account.fields.values()],
        "tags": [{"id": tid, "name": name} for tid, name in account.tags.items()],
        "hooks": [hook.as_json() for hook in account.hooks.values()],
        "ledger_rows": len(account.ledger),
    }


@router.post("/accounts")
async def create_account(request: Request, body: AccountIn | None = None) -> dict[str, Any]:
    """Create an account; returns its api_key (random unless given) and login."""
    body = body or AccountIn()
    if body.api_key is not None and not _KEY_RE.match(body.api_key):
        raise HTTPException(400, "api_key: 1-128 characters of A-Z a-z 0-9 _ -")
    try:
        account = _state(request).create_account(body.api_key, body.login)
    except KeyError:
        raise HTTPException(409, "api_key already exists") from None
    return {"api_key": account.api_key, "login": account.login}


@router.get("/accounts")
async def list_accounts(request: Request) -> dict[str, Any]:
    """All accounts with summaries."""
    return {"accounts": [_account_json(a) for a in _state(request).accounts.values()]}


@router.get("/accounts/{api_key}")
async def get_account(request: Request, api_key: str) -> dict[str, Any]:
    """One account: lists (with member counts), fields, tags, hooks."""
    return _account_json(_account(request, api_key))


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    """Forget all accounts, stats, deliveries and faults (configured accounts are re-created)."""
    _state(request).reset()
    return {"ok": True}


@router.post("/accounts/{api_key}/access")
async def set_access(request: Request, api_key: str, body: AccessIn) -> dict[str, Any]:
    """Deny the API to an account (``methods`` null = every method) or allow it again (``denied`` false)."""
    account = _account(request, api_key)
    if body.methods is None:
        account.access_denied = body.denied
        if not body.denied:
            account.denied_methods.clear()
    elif body.denied:
        account.denied_methods.update(body.methods)
    else:
        account.denied_methods.difference_update(body.methods)
    return _account_json(account)


@router.get("/accounts/{api_key}/contacts")
async def list_contacts(request: Request, api_key: str, offset: int = 0, limit: int = 1000) -> dict[str, Any]:
    """Contacts page by page (insertion order)."""
    account = _account(request, api_key)
    limit = max(0, min(limit, 100_000))
    page = islice(account.contacts_by_id.values(), max(0, offset), max(0, offset) + limit)
    return {
        "total": len(account.contacts_by_id),
        "offset": offset,
        "limit": limit,
        "contacts": [account.contact_json(c) for c in page],
    }


@router.get("/accounts/{api_key}/contacts/{email}")
async def get_contact(request: Request, api_key: str, email: str) -> dict[str, Any]:
    """One contact by email: status, availability, fields, tags, per-list status."""
    account = _account(request, api_key)
    return account.contact_json(_contact(account, email))


@router.get("/accounts/{api_key}/snapshot")
async def snapshot(request: Request, api_key: str) -> dict[str, Any]:
    """Every contact of the account in one comparable map, without ids and times: by address (a phone-only
    contact by phone), its status, phone, fields by name and per-list status."""
    account = _account(request, api_key)
    return {
        "contacts": {
            (c.email or c.phone or str(c.person_id)): {
                "status": c.status,
                "phone": c.phone,
                "fields": account.field_values(c),
                "lists": {str(lid): {"status": m.status} for lid, m in sorted(c.lists.items())},
            }
            for c in account.contacts_by_id.values()
        }
    }


@router.post("/accounts/{api_key}/contacts/{email}/unsubscribe")
async def contact_unsubscribes(
    request: Request, api_key: str, email: str, body: ContactActionIn | None = None
) -> dict[str, Any]:
    """The contact clicks the unsubscribe link: from one list, or from everything (``list_id`` null)."""
    state = _state(request)
    account = _account(request, api_key)
    contact = _contact(account, email)
    list_id = body.list_id if body else None
    changed = False
    if list_id is None:
        changed = contact.status != "unsubscribed"
        contact.status = "unsubscribed"
    else:
        membership = contact.lists.get(list_id)
        if membership is None:
            raise HTTPException(404, f"contact is not in list {list_id}")
        changed = membership.status != "unsubscribed"
        membership.status = "unsubscribed"
    if changed and (body is None or body.notify):
        now = state.now()
        if list_id is None:
            events = account_unsubscribe_events(contact, now)
        else:
            events = list_events("unsubscribe", now, contact.email, [list_id])
        if body is not None and body.campaign_id is not None:
            status = {"status": "ok_unsubscribed", "status_group": "unsubscribed_group"}
            data = {"email": contact.email, **status, "campaign_id": body.campaign_id}
            events.append(event("email_status", now, data))
        dispatcher: HookDispatcher = request.app.state.unisender_hooks
        dispatcher.emit(account, events)
    return {"changed": changed, "contact": account.contact_json(contact)}


@router.post("/accounts/{api_key}/contacts/{email}/activate")
async def contact_activates(
    request: Request, api_key: str, email: str, body: ContactActionIn | None = None
) -> dict[str, Any]:
    """The contact follows an activation link: active again (account-wide, or in one list)."""
    state = _state(request)
    account = _account(request, api_key)
    contact = _contact(account, email)
    list_id = body.list_id if body else None
    if list_id is None:
        contact.status = "active"
        for membership in contact.lists.values():
            membership.status = "active"
    else:
        if list_id not in account.lists:
            raise HTTPException(404, f"no list {list_id}")
        current = contact.lists.get(list_id)
        if current is None:
            account.lists[list_id].members.add(contact.person_id)
            contact.lists[list_id] = Membership(status="active", added_at=state.now())
        else:
            current.status = "active"
    lists = sorted(contact.lists) if list_id is None else [list_id]
    dispatcher: HookDispatcher = request.app.state.unisender_hooks
    dispatcher.emit(account, list_events("subscribe", state.now(), contact.email, lists))
    return {"contact": account.contact_json(contact)}


@router.post("/accounts/{api_key}/hook-events")
async def hook_events(request: Request, api_key: str, body: HookEventsIn) -> dict[str, Any]:
    """Make the account's hooks deliver these events (e.g. an ``email_status`` of a campaign letter)."""
    account = _account(request, api_key)
    unknown = sorted({e.event_name for e in body.events} - HOOK_EVENTS)
    if unknown:
        raise HTTPException(400, f"unknown event names: {unknown}; known: {sorted(HOOK_EVENTS)}")
    now = _state(request).now()
    events = [event(e.event_name, e.event_time or now, e.event_data) for e in body.events]
    dispatcher: HookDispatcher = request.app.state.unisender_hooks
    dispatcher.emit(account, events)
    return {"events": len(events)}


@router.get("/accounts/{api_key}/ledger")
async def ledger(
    request: Request, api_key: str, email: str | None = None, offset: int = 0, limit: int = 10_000
) -> dict[str, Any]:
    """Every row importContacts accepted, in order (optionally for one email/phone)."""
    account = _account(request, api_key)
    if email is not None:
        seqs = account.ledger_by_email.get(email.strip().lower(), [])
        rows = [account.ledger[i] for i in seqs]
    else:
        rows = account.ledger
    return {"total": len(rows), "entries": rows[max(0, offset) : max(0, offset) + max(0, limit)]}


@router.get("/accounts/{api_key}/ledger/summary")
async def ledger_summary(request: Request, api_key: str) -> dict[str, Any]:
    """Duplicate analysis over the ledger: repeated identical rows, addresses imported with differing data."""
    account = _account(request, api_key)
    repeated_identical = 0
    conflicting: list[str] = []
    multi = 0
    for key, seqs in account.ledger_by_email.items():
        if len(seqs) < 2:
            continue
        multi += 1
        payloads = [(account.ledger[i]["op"], account.ledger[i]["data"]) for i in seqs]
        repeated_identical += sum(1 for a, b in pairwise(payloads) if a == b)
        distinct = {repr(sorted(d.items())) + op for op, d in payloads}
        if len(distinct) > 1:
            conflicting.append(key)
    return {
        "rows": len(account.ledger),
        "import_calls": account.import_calls,
        "addresses": len(account.ledger_by_email),
        "addresses_imported_more_than_once": multi,
        "consecutive_identical_rows": repeated_identical,
        "addresses_with_differing_data": len(conflicting),
        "examples": conflicting[:100],
    }


@router.get("/accounts/{api_key}/hooks")
async def hooks(request: Request, api_key: str) -> dict[str, Any]:
    """Registered hooks of the account."""
    return {"hooks": [h.as_json() for h in _account(request, api_key).hooks.values()]}


@router.get("/deliveries")
async def deliveries(
    request: Request, api_key: str | None = None, hook_url: str | None = None, offset: int = 0
) -> dict[str, Any]:
    """Hook delivery attempts (each with status, retry_count, events and the exact body sent)."""
    dispatcher: HookDispatcher = request.app.state.unisender_hooks
    rows = [
        d
        for d in _state(request).deliveries[max(0, offset) :]
        if (api_key is None or d["api_key"] == api_key) and (hook_url is None or d["hook_url"] == hook_url)
    ]
    return {"pending": dispatcher.pending, "deliveries": rows}


@router.post("/faults")
async def set_faults(request: Request, body: FaultsIn) -> dict[str, Any]:
    """Install a fault plan (replaces any previous one)."""
    state = _state(request)
    bad = [k for k in body.kinds if k not in FAULT_KINDS]
    if bad:
        raise HTTPException(400, f"unknown fault kinds {bad}; known: {sorted(FAULT_KINDS)}")
    state.faults = FaultPlan(
        rate=body.rate,
        kinds=list(body.kinds),
        seed=body.seed,
        method=body.method,
        api_key=body.api_key,
        remaining=body.count,
        hang_seconds=state.config.hang_seconds if body.hang_seconds is None else body.hang_seconds,
        hang_applies=state.config.hang_applies if body.hang_applies is None else body.hang_applies,
    )
    return {"faults": state.faults.as_json()}


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    """The current fault plan (null when none) with injected counts."""
    plan = _state(request).faults
    return {"faults": plan.as_json() if plan else None}


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, Any]:
    """Stop injecting faults."""
    _state(request).faults = None
    return {"faults": None}


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    """Call counts per method (overall and per account), error codes, injected faults."""
    return _state(request).stats.as_json()
