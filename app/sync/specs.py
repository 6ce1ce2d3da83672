"""The sync spec as operators handle it: read it, replace it (checked against both providers, missing targets
created, a ``remap`` run started), preview a candidate without sending anything, and list what can be mapped.

Calls to the providers are made before the account's lock is taken, so a slow provider never holds up the
account's live changes; the lock is held only to store the new version and start its run.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.connectors.base import CrmFieldDef, EmailPlatformClient, EspContact, EspField, EspList
from app.connectors.errors import ConnectorError, ForbiddenError
from app.context import ProcessContext
from app.db.locks import account_lock
from app.errors import Unprocessable, UpstreamError
from app.sync import consent_repo, contacts_repo, outbox_repo, providers, remap, spec_repo
from app.sync.contacts_repo import Owner
from app.sync.mapping import Difference, already_held, difference, normalize_email
from app.sync.service import Derivation, derivation
from app.sync.spec import ListRule, SourceKind, SpecIn, StoredSpec
from app.sync.spec_check import Resolution, resolve

log = structlog.get_logger(__name__)

PREVIEW_MAX = 200  # addresses read live from the platform by one preview
TOTALS_CHUNK = 1000


class MappingOut(BaseModel):
    """The spec in force: each field with its resolved Kommo sources and Unisender target type, each list
    with its id and title."""

    version: int
    fields: list[Any]
    lists: list[ListRule]
    activity: list[str] = Field(description="The email activity kinds written to Kommo contacts as notes")
    create_contacts: bool = Field(
        False, description="Whether newsletter signups no Kommo contact holds become Kommo contacts"
    )
    run_id: str | None = Field(None, description="The remap run a replaced spec started")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: SpecIn | None = Field(None, description="A candidate; the spec in force when omitted")
    limit: int = Field(50, ge=1, le=PREVIEW_MAX)
    emails: list[str] | None = Field(None, max_length=PREVIEW_MAX)


T = TypeVar("T")


async def _upstream(what: str, call: Awaitable[T]) -> T:
    """A provider call made for an operator's request: its failure is a 502 saying what failed."""
    try:
        return await call
    except ConnectorError as exc:
        raise UpstreamError(f"{what} failed: {exc.message}", code="upstream_error") from exc


@dataclass
class _Providers:
    crm_fields: list[CrmFieldDef]
    esp_fields: list[EspField]
    esp_lists: list[EspList]
    esp: EmailPlatformClient


async def _read_providers(session: AsyncSession, pc: ProcessContext, account_id: int) -> _Providers:
    crm = await providers.crm_client(pc, account_id)
    esp, _ = await providers.esp_client(session, pc, account_id)
    crm_fields = await _upstream("Reading Kommo's contact fields", crm.get_custom_fields())
    esp_fields = await _upstream("Reading Unisender's fields", esp.get_fields())
    esp_lists = await _upstream("Reading Unisender's lists", esp.get_lists())
    return _Providers(crm_fields, esp_fields, esp_lists, esp)


def _refuse(resolution: Resolution) -> None:
    if resolution.errors:
        raise Unprocessable(
            f"The mapping has {len(resolution.errors)} error(s); nothing was changed.",
            code="invalid_mapping",
            extra={"errors": [e.as_json() for e in resolution.errors]},
        )


async def mapping_view(
    session: AsyncSession, account_id: int, *, version: int | None = None, spec: StoredSpec | None = None
) -> MappingOut:
    """The spec in force, its base list shown with the account's list id."""
    if spec is None or version is None:
        version, spec = await spec_repo.current_spec(session, account_id)
    esp = await accounts_repo.get_esp_account(session, account_id)
    base_list_id = esp.list_id if esp is not None else None
    lists = [rule.model_copy(update={"list_id": base_list_id}) if rule.base else rule for rule in spec.lists]
    fields = [f.model_dump(mode="json") for f in spec.fields]
    return MappingOut(
        version=version,
        fields=fields,
        lists=lists,
        activity=spec.activity,
        create_contacts=spec.create_contacts,
    )


async def replace_spec(
    session: AsyncSession, pc: ProcessContext, account_id: int, body: SpecIn
) -> MappingOut:
    """Check ``body`` against both providers (422 ``invalid_mapping`` naming every bad entry; nothing changes),
    create what it asks to create, store it as the next version and start re-deriving the account."""
    read = await _read_providers(session, pc, account_id)
    resolution = resolve(
        body, read.crm_fields, read.esp_fields, read.esp_lists, read.esp.reserved_field_names
    )
    _refuse(resolution)
    for name, type_ in resolution.create_fields.items():
        await _upstream("Creating a Unisender field", read.esp.create_field(name, type_))
    created: dict[str, int] = {}
    for title in resolution.create_lists:
        created[title] = await _upstream("Creating a Unisender list", read.esp.create_list(title))
    resolution.set_list_ids(created)
    spec = resolution.spec
    if spec.uses(SourceKind.RESPONSIBLE_USER):
        await refresh_users(session, pc, account_id)
    await account_lock(session, account_id)
    version = await spec_repo.store_spec(session, account_id, spec)
    run = await remap.start_remap(session, pc.queue, account_id, version)
    log.info("mapping.replaced", account_id=account_id, version=version, run_id=run.id)
    view = await mapping_view(session, account_id, version=version, spec=spec)
    view.run_id = run.id
    return view


async def refresh_mapped_users(pc: ProcessContext, account_id: int) -> bool:
    """Cron: when the account's spec maps the responsible user, read Kommo's users again; a name that changed
    or appeared (a new user responsible for contacts) re-derives the account. True when it did."""
    async with pc.db.session_scope() as session:
        version, spec = await spec_repo.current_spec(session, account_id)
        if not spec.uses(SourceKind.RESPONSIBLE_USER) or not await refresh_users(session, pc, account_id):
            return False
        await account_lock(session, account_id)
        await remap.start_remap(session, pc.queue, account_id, version)
    log.info("mapping.users_changed", account_id=account_id)
    return True


async def refresh_users(session: AsyncSession, pc: ProcessContext, account_id: int) -> bool:
    """Read the CRM's users into ``crm_user``; True when a name changed. A token without the rights to list
    users keeps the names we have (the source then stays empty for unknown users)."""
    crm = await providers.crm_client(pc, account_id)
    try:
        users = await crm.get_users()
    except ForbiddenError:
        log.warning("mapping.users_forbidden", account_id=account_id)
        return False
    except ConnectorError as exc:
        raise UpstreamError(f"Reading Kommo's users failed: {exc.message}", code="upstream_error") from exc
    return await spec_repo.replace_users(session, account_id, {u.id: u.name for u in users})


# --- preview ------------------------------------------------------------------------------------------------


@dataclass
class Totals:
    addresses: int = 0
    would_change: int = 0
    fields: dict[str, int] = field(default_factory=dict)
    join: dict[int, int] = field(default_factory=dict)
    leave: dict[int, int] = field(default_factory=dict)
    delete: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "addresses": self.addresses,
            "would_change": self.would_change,
            "fields": dict(sorted(self.fields.items())),
            "join": {str(k): v for k, v in sorted(self.join.items())},
            "leave": {str(k): v for k, v in sorted(self.leave.items())},
            "delete": self.delete,
        }


async def preview(
    session: AsyncSession, pc: ProcessContext, account_id: int, body: PreviewIn
) -> dict[str, Any]:
    """A dry run of ``body.spec`` (or the spec in force): nothing is stored or sent.

    Per sampled address: what Unisender holds now (read live), what the spec would send, and the differences.
    Totals for the whole account: the addresses a save would push (exactly those the ``remap`` run would
    queue: the same derivation against what Unisender last accepted from us), per field and list.
    """
    new_lists: dict[str, str] = {}
    version, spec = await spec_repo.current_spec(session, account_id)
    if body.spec is not None:
        read = await _read_providers(session, pc, account_id)
        resolution = resolve(
            body.spec, read.crm_fields, read.esp_fields, read.esp_lists, read.esp.reserved_field_names
        )
        _refuse(resolution)
        # Lists a save would create have no id yet: stand-ins, named in the answer.
        stand_ins = {title: -(i + 1) for i, title in enumerate(resolution.create_lists)}
        resolution.set_list_ids(stand_ins)
        new_lists = {str(v): k for k, v in stand_ins.items()}
        spec = resolution.spec
        esp = read.esp
    else:
        esp, _ = await providers.esp_client(session, pc, account_id)
    derive = await derivation(session, account_id, spec)
    if body.spec is not None and spec.uses(SourceKind.RESPONSIBLE_USER) and not derive.users:
        await refresh_users(session, pc, account_id)
        derive = await derivation(session, account_id, spec)
    totals = await _totals(session, account_id, derive)
    sample = await _sample(session, account_id, body)
    known = await _known(session, account_id, sample)
    addresses = [await _sampled(derive, esp, email, known) for email in sample]
    return {
        "version": version,
        "candidate": body.spec is not None,
        "new_fields": sorted(resolution.create_fields) if body.spec is not None else [],
        "new_lists": new_lists,
        "addresses": addresses,
        "totals": totals.as_json(),
    }


async def _sample(session: AsyncSession, account_id: int, body: PreviewIn) -> list[str]:
    if body.emails is not None:
        found = [normalize_email(e) for e in body.emails]
        bad = [raw for raw, e in zip(body.emails, found, strict=True) if e is None]
        if bad:
            raise Unprocessable(f"Not an address: {bad[0]!r}.", code="invalid_email")
        return list(dict.fromkeys(e for e in found if e is not None))
    return await contacts_repo.held_addresses(session, account_id, body.limit)


@dataclass(frozen=True, slots=True)
class _Known:
    """What we hold of some addresses: their owners, consents, per-list unsubscribes and what Unisender last
    accepted from us (the inputs of ``service.recompute``'s decision)."""

    owners: dict[str, Owner]
    unsubscribed: set[str]
    per_list: dict[str, frozenset[int]]
    pushed: dict[str, tuple[str | None, dict[str, Any] | None]]

    def payload(self, derive: Derivation, email: str) -> dict[str, Any]:
        held = self.pushed.get(email, (None, None))[1]
        return derive.payload(email, self.owners.get(email), self.per_list.get(email, frozenset()), held)


async def _known(session: AsyncSession, account_id: int, emails: list[str]) -> _Known:
    return _Known(
        await contacts_repo.live_owners(session, account_id, emails),
        await consent_repo.unsubscribed(session, account_id, emails),
        await consent_repo.list_unsubscribes(session, account_id, emails),
        await outbox_repo.pushed_state(session, account_id, emails),
    )


async def _sampled(derive: Derivation, esp: EmailPlatformClient, email: str, known: _Known) -> dict[str, Any]:
    unsubscribed = email in known.unsubscribed
    wanted = known.payload(derive, email)
    live = await _upstream("Reading a Unisender contact", esp.get_contact(email))
    holds = _live_payload(live)
    diff = difference(holds, wanted)
    return {
        "email": email,
        "unsubscribed": unsubscribed,  # never pushed, whatever the spec says
        "holds": None
        if live is None
        else {"status": live.status, "fields": live.fields, "lists": holds["lists"]},
        "would_send": None if unsubscribed else wanted,
        "differences": None
        if unsubscribed
        else {
            "fields": {k: {"from": a, "to": b} for k, (a, b) in sorted(diff.fields.items())},
            "join": diff.join,
            "leave": [i for i in wanted.get("excluded", []) if live is not None and i in live.list_ids],
            "delete": diff.delete,
            "phone": None if diff.phone is None else {"from": diff.phone[0], "to": diff.phone[1]},
        },
    }


def _live_payload(live: EspContact | None) -> dict[str, Any]:
    if live is None:
        return {"delete": True, "lists": []}
    return {"delete": False, "fields": dict(live.fields), "lists": sorted(live.list_ids)}


async def _totals(session: AsyncSession, account_id: int, derive: Derivation) -> Totals:
    """What a save would push, address by address, by the rule ``service.recompute`` applies."""
    totals = Totals()
    after = 0
    while True:
        chunk = await consent_repo.addresses_after(session, account_id, after, TOTALS_CHUNK)
        if not chunk:
            return totals
        after = chunk[-1][0]
        emails = [email for _, email in chunk]
        known = await _known(session, account_id, emails)
        for email in emails:
            totals.addresses += 1
            if email in known.unsubscribed:
                continue
            owner = known.owners.get(email)
            held_hash, held = known.pushed.get(email, (None, None))
            wanted = known.payload(derive, email)
            if email not in known.pushed:
                if owner is None:
                    continue
            elif already_held(wanted, held_hash, held, owned=owner is not None):
                continue
            totals.would_change += 1
            _count(totals, difference(held, wanted))


def _count(totals: Totals, diff: Difference) -> None:
    for name in diff.fields:
        totals.fields[name] = totals.fields.get(name, 0) + 1
    if diff.phone is not None:
        totals.fields["phone"] = totals.fields.get("phone", 0) + 1
    for list_id in diff.join:
        totals.join[list_id] = totals.join.get(list_id, 0) + 1
    for list_id in diff.leave:
        totals.leave[list_id] = totals.leave.get(list_id, 0) + 1
    totals.delete += int(diff.delete)


# --- what can be mapped ------------------------------------------------------------------------------------


async def kommo_fields(pc: ProcessContext, account_id: int) -> list[CrmFieldDef]:
    crm = await providers.crm_client(pc, account_id)
    return await _upstream("Reading Kommo's contact fields", crm.get_custom_fields())


async def unisender_fields(session: AsyncSession, pc: ProcessContext, account_id: int) -> list[EspField]:
    esp, _ = await providers.esp_client(session, pc, account_id)
    return await _upstream("Reading Unisender's fields", esp.get_fields())


async def unisender_lists(session: AsyncSession, pc: ProcessContext, account_id: int) -> list[EspList]:
    esp, _ = await providers.esp_client(session, pc, account_id)
    return await _upstream("Reading Unisender's lists", esp.get_lists())
