"""Newsletter signups become CRM contacts: an address no live contact holds that joins a mapped list by
itself (a signup form: the platform's ``subscribe`` hook event) gets a CRM contact, tagged for that list,
when the account's spec says ``create_contacts``; otherwise it is recorded and shown. The rules are in
``signup_rules``.

Never two contacts for one address, whatever the deliveries:
- ``signup`` holds one row per (account, address) (a unique constraint): duplicated and concurrent
  deliveries of a signup add lists to that row, never a second row, so it is settled once;
- one job per account settles rows at a time (``signups:<account>`` lock, held while it works); a second
  job finds it held and leaves the work to it;
- before creating, the job looks the address up in the CRM (Kommo has no duplicate control, spec §10): a
  contact found there (one created by a job that died before recording it, or by a user meanwhile) is
  linked, not created again. Only a crash between Kommo's answer and our commit, with Kommo's search not
  yet showing the new contact, could still make a second one (UNCONFIRMED how soon Kommo's search sees it).

The CRM write happens in the worker (``tasks.signup_contacts``), after the hook's events are committed;
the sweeper re-finds pending rows. Once the created contact's webhook comes back, the mirror owns the
address like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.connectors.base import CrmClient, CrmNewContact, EmailPlatformClient, EspContact
from app.connectors.errors import NotFoundError, RequestError, TransientError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import xact_lock
from app.db.models import Signup
from app.db.states import IntegrationStatus, SignupState
from app.sync import contacts_repo, providers, signups_repo, spec_repo
from app.sync import signup_rules as rules
from app.sync.signups_repo import NewSignup
from app.sync.spec import StoredSpec

log = structlog.get_logger(__name__)

ROWS = 50  # per round: Kommo's recommended batch, so a round's contacts are one POST
MAX_ROUNDS = 10  # per job; a follow-up job continues
# Look-ups in flight: the CRM client's budget paces them (Kommo: 7 a second), so a round of 50 takes about
# 7 s instead of 50 round trips in a row; the platform's reads go alongside.
CRM_CONCURRENCY = 7
ESP_CONCURRENCY = 4
_T = TypeVar("_T")
_R = TypeVar("_R")

Joined = tuple[str, Sequence[int]]  # an address and the lists a subscribe event says it joined


async def record_signups(session: AsyncSession, account_id: int, events: Sequence[Joined]) -> bool:
    """Record the signups of one transaction's hook events (in the caller's transaction); True when one
    awaits its CRM contact (a job is due once committed)."""
    if not events:
        return False
    _, spec = await spec_repo.current_spec(session, account_id)
    base = await _base_list(session, account_id)
    wanted: dict[str, list[int]] = {}
    for email, lists in events:
        mapped = rules.mapped_lists(spec, lists, base)
        if mapped:
            wanted[email] = rules.joined(wanted.get(email, []), mapped)
    if not wanted:
        return False
    held = await signups_repo.signups_for(session, account_id, list(wanted))
    due = False
    for email, row in held.items():
        before = list(row.list_ids)
        after = rules.joined(before, wanted[email])
        if after == before:
            continue  # a redelivery, or a list it joined before
        row.list_ids = after
        if row.state is SignupState.CREATED and rules.needs_tags(spec, before, after, base):
            row.state, due = SignupState.PENDING, True
    fresh = [email for email in wanted if email not in held]
    owners = await contacts_repo.live_owners(session, account_id, fresh)
    rows = [
        NewSignup(
            email,
            wanted[email],
            rules.first_state(owned=email in owners, create_contacts=spec.create_contacts),
            owners[email].kommo_id if email in owners else None,
        )
        for email in fresh
    ]
    added = await signups_repo.add_signups(session, account_id, rows)
    if added:
        log.info("signups.recorded", account_id=account_id, count=added)
    return due or any(r.state is SignupState.PENDING for r in rows)


async def _base_list(session: AsyncSession, account_id: int) -> int | None:
    esp = await accounts_repo.get_esp_account(session, account_id)
    return esp.list_id if esp is not None else None


@dataclass
class SignupResult:
    created: int = 0
    settled: int = 0  # rows settled in any way (created, linked, recorded, failed, tagged)
    busy: bool = False  # another job holds the account's signups
    more: bool = False  # stopped at MAX_ROUNDS with rows left


class _Outcome(NamedTuple):
    row: Signup
    state: SignupState | None  # None: still pending (``error`` held it up)
    kommo_id: int | None = None
    error: Exception | str | None = None


def _reason(error: Exception | str | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"[:1000]


@dataclass(frozen=True, slots=True)
class _Round:
    rows: list[Signup]
    spec: StoredSpec
    base: int | None
    owners: dict[str, int]  # address → the live contact holding it
    esp: EmailPlatformClient


async def create_signup_contacts(pc: ProcessContext, account_id: int) -> SignupResult:
    """Settle the account's pending signups (bounded; ``more`` asks for another job). A transient error is
    raised (the worker retries; settled rows stay settled, the others pending)."""
    result = SignupResult()
    async with pc.db.session_scope() as hold:
        # Held (idle) while the CRM is called: whoever else runs finds the account's signups taken.
        if not await xact_lock(hold, f"signups:{account_id}", wait=False):
            result.busy = True
            return result
        integ = await accounts_repo.get_integration(hold, account_id)
        if integ is None or integ.status != IntegrationStatus.CONNECTED:
            return result
        for _ in range(MAX_ROUNDS):
            work = await _next_round(pc, account_id)
            if work is None:
                return result
            crm = await providers.crm_client(pc, account_id)
            await _settle_round(pc, crm, work, result)
        result.more = True
    return result


async def _next_round(pc: ProcessContext, account_id: int) -> _Round | None:
    async with pc.db.session_scope() as session:
        rows = await signups_repo.pending_signups(session, account_id, ROWS)
        if not rows:
            return None
        _, spec = await spec_repo.current_spec(session, account_id)
        base = await _base_list(session, account_id)
        found = await contacts_repo.live_owners(session, account_id, [r.email for r in rows])
        esp, _ = await providers.esp_client(session, pc, account_id)
    owners = {email: owner.kommo_id for email, owner in found.items()}
    return _Round(rows, spec, base, owners, esp)


async def _settle_round(pc: ProcessContext, crm: CrmClient, work: _Round, result: SignupResult) -> None:
    """Rows settled without the CRM first (recorded, linked to a contact the mirror holds) or with one call
    (tags added); the others are looked up in the CRM while the platform's values are read, concurrently
    (each client paces its own calls), and those not found are created in one call. Whatever was decided
    is recorded even when a call fails (the worker retries the rest)."""
    done: list[_Outcome] = []
    try:
        ask = await _without_lookup(crm, work, done)
        if ask:
            await _lookup_and_create(crm, work, ask, done, result)
    finally:
        await _settle(pc, work, done, result)


async def _without_lookup(crm: CrmClient, work: _Round, done: list[_Outcome]) -> list[Signup]:
    """Settle the rows that need no look-up; the rest, to look up."""
    ask: list[Signup] = []
    for row in work.rows:
        if row.kommo_id is not None:  # created before: the lists joined since add their tags
            try:
                tags = rules.signup_tags(work.spec, row.list_ids, work.base)
                await crm.add_contact_tags(row.kommo_id, tags)
            except (RequestError, NotFoundError) as exc:  # e.g. the contact was deleted meanwhile
                done.append(_Outcome(row, SignupState.FAILED, None, exc))
                continue
            except TransientError as exc:
                done.append(_Outcome(row, None, None, exc))
                raise
            done.append(_Outcome(row, SignupState.CREATED, row.kommo_id))
        elif not work.spec.create_contacts:  # switched off since it was recorded
            done.append(_Outcome(row, SignupState.RECORDED))
        elif row.email in work.owners:
            done.append(_Outcome(row, SignupState.LINKED, work.owners[row.email]))
        else:
            ask.append(row)
    return ask


async def _lookup_and_create(
    crm: CrmClient, work: _Round, ask: list[Signup], done: list[_Outcome], result: SignupResult
) -> None:
    found, held = await asyncio.gather(
        _each(ask, lambda r: crm.find_contact_ids_by_email(r.email), CRM_CONCURRENCY),
        _each(ask, lambda r: work.esp.get_contact(r.email), ESP_CONCURRENCY),
    )
    to_create: list[tuple[Signup, CrmNewContact]] = []
    transient: TransientError | None = None
    for row, ids, contact in zip(ask, found, held, strict=True):
        if isinstance(ids, list) and ids:
            done.append(_Outcome(row, SignupState.LINKED, ids[0]))
            continue
        error = (
            ids if isinstance(ids, BaseException) else contact if isinstance(contact, BaseException) else None
        )
        if isinstance(error, RequestError | NotFoundError):  # this row's own trouble: the others go on
            done.append(_Outcome(row, SignupState.FAILED, None, error))
        elif isinstance(error, TransientError):
            transient = transient or error
            done.append(_Outcome(row, None, None, error))
        elif error is not None:
            raise error
        elif not isinstance(contact, BaseException):
            to_create.append((row, _new_contact(work, row, contact)))
    if to_create:
        try:
            outcome = await crm.create_contacts([new for _, new in to_create])
        except TransientError as exc:
            # Some may have been created (a timeout, a 5xx): the retry's look-up finds those.
            done.extend(_Outcome(row, None, None, exc) for row, _ in to_create)
            raise
        for row, new in to_create:
            if new.email in outcome.created:
                done.append(_Outcome(row, SignupState.CREATED, outcome.created[new.email]))
                result.created += 1
            else:
                reason = outcome.refused.get(new.email, "not created")
                done.append(_Outcome(row, SignupState.FAILED, None, reason))
        log.info("signups.contacts_created", created=len(outcome.created), refused=len(outcome.refused))
    if transient is not None:
        raise transient  # the worker retries the rows it held up


def _new_contact(work: _Round, row: Signup, held: EspContact | None) -> CrmNewContact:
    values = rules.contact_values(work.spec, held.fields if held is not None else {})
    tags = tuple(rules.signup_tags(work.spec, row.list_ids, work.base))
    return CrmNewContact(row.email, values.name, values.first_name, values.last_name, tags, values.fields)


async def _each(
    items: Sequence[_T], call: Callable[[_T], Awaitable[_R]], limit: int
) -> list[_R | BaseException]:
    """``call`` on every item, at most ``limit`` at a time; each result or the exception it raised."""
    gate = asyncio.Semaphore(limit)

    async def one(item: _T) -> _R:
        async with gate:
            return await call(item)

    return list(await asyncio.gather(*(one(i) for i in items), return_exceptions=True))


async def _settle(pc: ProcessContext, work: _Round, done: Sequence[_Outcome], result: SignupResult) -> None:
    """Record the round's outcomes in one transaction. A created row whose lists grew meanwhile goes back to
    pending for their tags; a row without a state stays pending, with what held it up."""
    if not done:
        return
    async with pc.db.session_scope() as session:
        held = await signups_repo.lock_signups(session, [o.row.id for o in done])
        for row, state, kommo_id, error in done:
            now = held.get(row.id)
            if now is None or now.state is not SignupState.PENDING:
                continue
            now.last_error = _reason(error)
            if state is None:
                continue
            if state is SignupState.CREATED and rules.needs_tags(
                work.spec, row.list_ids, now.list_ids, work.base
            ):
                state = SignupState.PENDING
            now.state, now.handled_at = state, utcnow()
            now.kommo_id = kommo_id if kommo_id is not None else now.kommo_id
            result.settled += state is not SignupState.PENDING
