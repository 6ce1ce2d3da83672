"""Dead letters: webhook events, outbox rows, CRM writes and signups that failed for good, listed with their
reason and the provider's answer, and put back on their normal path (replay) or given up on (discard).

A dead letter is not a copy: it is the row itself, in its table's dead state (``repository.TABLES``). So:

- replay resets the row where its own job picks it up (pending, due now, attempts and last outcome
  forgotten) and, after the commit, enqueues that job. The job then does what it always does; a row that
  fails again is dead again, with its new reason, and is listed again. An outbox row is re-derived under the
  account's lock as any change is (``app.sync.service.recompute``): what is sent is today's desire for the
  address, so an address unsubscribed since is cancelled instead of sent, and one the platform already holds
  is settled;
- discard marks the row ``discarded``: no longer listed, its reason kept. A later different desire for the
  address still requeues a discarded outbox row (the outbox holds one row per address);
- a row that is no longer dead is skipped, so both are idempotent; bad input changes nothing;
- each replay or discard is recorded in ``dead_letter_action``: who (``actor``), when, what.

Public interface (the API, ``contactsync dead-letters`` and the console call these; each takes the caller's
session and never commits): ``list_page``, ``totals``, ``replay``, ``discard``, ``list_actions``. The caller
owns the transaction (``Database.session_scope`` or the API's ``get_session``): a replay's jobs are sent once
it commits, and if they are lost the sweeper finds the pending rows anyway.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.integrations import require_account
from app.db.base import utcnow
from app.db.locks import account_lock
from app.db.session import AfterCommit, after_commit
from app.db.states import DeadLetterKind, DeadLetterOperation, EventSource
from app.deadletters import repository as repo
from app.deadletters.errors import (
    AmbiguousSelection,
    InvalidActor,
    InvalidId,
    NothingSelected,
    TooManyIds,
    UnknownDeadLetter,
    UnknownKind,
)
from app.deadletters.schemas import (
    ActionPage,
    ActionResult,
    ActionView,
    DeadLetter,
    DeadLetterPage,
    KindCounts,
    Selection,
)
from app.queue import enqueue
from app.sync import service as mirror

log = structlog.get_logger(__name__)

MAX_IDS = 1000  # ids named in one request
MAX_ALL = 5000  # rows one "all" action takes (oldest first; ``more`` says whether any are left)
PER_PAGE = 50
MAX_PER_PAGE = 200
MAX_ACTOR = 64
KINDS: tuple[str, ...] = tuple(k.value for k in DeadLetterKind)

_ID = re.compile(r"^(?:([a-z_]{1,16}):)?([0-9]{1,18})$")  # 18 digits always fit a bigint
_ACTOR = re.compile(r"^[\x21-\x7e][\x20-\x7e]*$")

# Why each dead state is dead, in words (the stored error says the rest).
REASONS: dict[tuple[DeadLetterKind, str], str] = {
    (DeadLetterKind.EVENT, "failed"): "could not be applied",
    (DeadLetterKind.EVENT, "unrecognised"): "not understood (unknown event or layout)",
    (DeadLetterKind.OUTBOX, "rejected"): "refused by the email platform",
    (DeadLetterKind.OUTBOX, "dead"): "attempts exhausted",
    (DeadLetterKind.CRM_WRITE, "failed"): "refused by the CRM, or no CRM form for the value",
    (DeadLetterKind.SIGNUP, "failed"): "the CRM refused the contact",
}


def parse_kind(kind: DeadLetterKind | str | None) -> DeadLetterKind | None:
    """The kind named (None: every kind); ``unknown_kind`` otherwise."""
    if kind is None or isinstance(kind, DeadLetterKind):
        return kind
    try:
        return DeadLetterKind(kind)
    except ValueError:
        raise UnknownKind(str(kind)[:40], KINDS) from None


def parse_id(value: str, kind: DeadLetterKind | None) -> tuple[DeadLetterKind, int]:
    """``"outbox:123"`` (or ``"123"`` with a kind) → (kind, 123); ``invalid_id`` otherwise."""
    found = _ID.match(value.strip())
    if found is None:
        raise InvalidId(value, "use <kind>:<number>, e.g. outbox:123")
    named, number = found.group(1), int(found.group(2))
    if named is None:
        if kind is None:
            raise InvalidId(value, f"no kind: write it as <kind>:{number} or give a kind")
        return kind, number
    id_kind = parse_kind(named)
    assert id_kind is not None
    if kind is not None and id_kind is not kind:
        raise InvalidId(value, f"it is not of kind {kind.value}")
    return id_kind, number


def _actor(actor: str) -> str:
    if len(actor) > MAX_ACTOR or not _ACTOR.match(actor):
        raise InvalidActor(MAX_ACTOR)
    return actor


@dataclass
class _Chosen:
    """The rows an action is for, per kind, once the selection was checked."""

    kind: DeadLetterKind | None
    selected_all: bool
    ids: dict[DeadLetterKind, list[int]] = field(default_factory=dict)
    more: bool = False

    @property
    def requested(self) -> int:
        return sum(len(ids) for ids in self.ids.values())


async def _choose(
    session: AsyncSession, account_id: int, selection: Selection, before: datetime | None
) -> _Chosen:
    """Check the selection (nothing is changed by a refusal) and find its rows."""
    kind = parse_kind(selection.kind)
    ids = list(selection.ids)
    if ids and selection.all:
        raise AmbiguousSelection()
    if not ids and not selection.all:
        raise NothingSelected()
    if len(ids) > MAX_IDS:
        raise TooManyIds(len(ids), MAX_IDS)
    await require_account(session, account_id)
    chosen = _Chosen(kind, selection.all)
    if selection.all:
        room = MAX_ALL
        for k in [kind] if kind is not None else list(DeadLetterKind):
            found = await repo.dead_ids(session, account_id, k, before=before, limit=room + 1)
            if len(found) > room:
                chosen.more, found = True, found[:room]
            if found:
                chosen.ids[k] = found
            room -= len(found)
            if room <= 0:
                # Every kind after this one may hold more: say so only if one does.
                chosen.more = chosen.more or await _any_left(session, account_id, kind, k, before)
                break
        return chosen
    named: dict[DeadLetterKind, dict[int, str]] = {}
    for value in ids:
        k, number = parse_id(str(value), kind)
        named.setdefault(k, {})[number] = f"{k.value}:{number}"
    missing: list[str] = []
    # One order of kinds (and of ids within a kind) for every request: two requests naming the same rows in
    # other orders lock them in the same order, so they cannot deadlock.
    for k in [k for k in DeadLetterKind if k in named]:
        wanted = named[k]
        found_ids = await repo.existing(session, account_id, k, sorted(wanted))
        missing += [label for number, label in wanted.items() if number not in found_ids]
        chosen.ids[k] = sorted(wanted)
    if missing:
        raise UnknownDeadLetter(account_id, missing)
    return chosen


async def _any_left(
    session: AsyncSession,
    account_id: int,
    kind: DeadLetterKind | None,
    last: DeadLetterKind,
    before: datetime | None,
) -> bool:
    if kind is not None:
        return False
    later = list(DeadLetterKind)[list(DeadLetterKind).index(last) + 1 :]
    for k in later:
        if await repo.dead_ids(session, account_id, k, before=before, limit=1):
            return True
    return False


async def list_page(
    session: AsyncSession,
    account_id: int,
    *,
    kind: DeadLetterKind | str | None = None,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> DeadLetterPage:
    """One page of the account's dead letters (of ``kind``, or every kind), newest first, with the count per
    kind. 404 ``unknown_account``, 422 ``unknown_kind``."""
    wanted = parse_kind(kind)
    await require_account(session, account_id)
    page = max(1, page)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    per_kind = await repo.counts(session, account_id)
    kinds = [wanted] if wanted is not None else list(DeadLetterKind)
    total = sum(per_kind[k] for k in kinds)
    rows = []
    if total > (page - 1) * per_page:
        rows = await repo.page(session, account_id, kinds, offset=(page - 1) * per_page, limit=per_page)
    return DeadLetterPage(
        account_id=account_id,
        kind=wanted,
        page=page,
        per_page=per_page,
        total=total,
        pages=(total + per_page - 1) // per_page,
        counts={k.value: n for k, n in per_kind.items()},
        items=[_letter(row) for row in rows],
    )


async def totals(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, int]:
    """Per account, how many dead letters it holds (every kind; 0 for none), in one query: for a list of
    accounts."""
    found = await repo.counts_by_account(session, sorted(set(account_ids)))
    return {account_id: found.get(account_id, 0) for account_id in account_ids}


def _letter(row: repo.Row) -> DeadLetter:
    return DeadLetter(
        id=f"{row.kind.value}:{row.id}",
        kind=row.kind,
        row_id=row.id,
        status=row.status,
        reason=REASONS.get((row.kind, row.status), row.status),
        error=row.error,
        code=row.code,
        attempts=row.attempts,
        at=row.at,
        email=row.email,
        kommo_id=row.kommo_id,
        detail=row.detail,
    )


async def replay(
    session: AsyncSession,
    queue: ArqRedis,
    account_id: int,
    selection: Selection,
    *,
    actor: str,
    before: datetime | None = None,
) -> ActionResult:
    """Put the selected dead letters back on their normal path; their jobs are enqueued once the caller's
    transaction commits. ``before`` (with ``all``): only those that died at or before it, so that a caller
    repeating ``all`` while ``more`` never takes back a row that failed again meanwhile.
    Refusals (nothing changed): 404 ``unknown_account``/``unknown_dead_letter``, 422 ``unknown_kind``,
    ``nothing_selected``, ``ambiguous_selection``, ``invalid_id``, ``too_many_ids``, ``invalid_actor``."""
    who = _actor(actor)
    chosen = await _choose(session, account_id, selection, before)
    now = utcnow()
    done: dict[DeadLetterKind, list[int]] = {}
    if DeadLetterKind.OUTBOX in chosen.ids:
        # Before the rows: the lock order of every writer of the mirror (account, then rows).
        await account_lock(session, account_id)
    for kind, ids in chosen.ids.items():
        revived = await repo.revive(session, account_id, kind, ids, now)
        done[kind] = sorted(i for i, _ in revived)
        if not revived:
            continue
        if kind is DeadLetterKind.EVENT:
            for source in sorted(repo.event_sources(revived)):
                after_commit(session, _wake_events(queue, account_id, source))
        elif kind is DeadLetterKind.OUTBOX:
            # Today's desire for each address, by the mirror's own rules (see the module's docstring).
            await mirror.recompute(session, account_id, [k for _, k in revived if k is not None])
            await repo.queue_as_bulk(session, account_id, done[kind])
            after_commit(session, lambda: enqueue.flush_outbox(queue, account_id, delay=0))
        elif kind is DeadLetterKind.CRM_WRITE:
            after_commit(session, lambda: enqueue.crm_writes(queue, account_id))
        else:
            after_commit(session, lambda: enqueue.signup_contacts(queue, account_id))
    return await _record(session, account_id, DeadLetterOperation.REPLAY, who, chosen, done, now)


def _wake_events(queue: ArqRedis, account_id: int, source: EventSource) -> AfterCommit:
    return lambda: enqueue.process_events(queue, account_id, source)


async def discard(
    session: AsyncSession,
    account_id: int,
    selection: Selection,
    *,
    actor: str,
    before: datetime | None = None,
) -> ActionResult:
    """Give up on the selected dead letters: marked ``discarded``, no longer listed. Refusals as ``replay``."""
    who = _actor(actor)
    chosen = await _choose(session, account_id, selection, before)
    now = utcnow()
    done = {
        kind: sorted(await repo.discard(session, account_id, kind, ids, now))
        for kind, ids in chosen.ids.items()
    }
    return await _record(session, account_id, DeadLetterOperation.DISCARD, who, chosen, done, now)


async def _record(
    session: AsyncSession,
    account_id: int,
    operation: DeadLetterOperation,
    actor: str,
    chosen: _Chosen,
    done: dict[DeadLetterKind, list[int]],
    now: datetime,
) -> ActionResult:
    affected = sum(len(ids) for ids in done.values())
    by_kind = {
        k.value: KindCounts(affected=len(done.get(k, [])), skipped=len(ids) - len(done.get(k, [])))
        for k, ids in chosen.ids.items()
    }
    action = await repo.record_action(
        session,
        account_id=account_id,
        operation=operation,
        actor=actor,
        kind=chosen.kind,
        selected_all=chosen.selected_all,
        requested=chosen.requested,
        affected=affected,
        skipped=chosen.requested - affected,
        items={k.value: ids for k, ids in done.items() if ids},
        at=now,
    )
    log.info(
        "dead_letters.action",
        account_id=account_id,
        operation=operation.value,
        actor=actor,
        action_id=action.id,
        requested=chosen.requested,
        affected=affected,
    )
    return ActionResult(
        action_id=action.id,
        account_id=account_id,
        operation=operation,
        actor=actor,
        at=now,
        kind=chosen.kind,
        selected_all=chosen.selected_all,
        requested=chosen.requested,
        affected=affected,
        skipped=chosen.requested - affected,
        more=chosen.more,
        by_kind=by_kind,
    )


async def list_actions(
    session: AsyncSession, account_id: int, *, page: int = 1, per_page: int = PER_PAGE
) -> ActionPage:
    """The account's replays and discards, newest first. 404 ``unknown_account``."""
    await require_account(session, account_id)
    page = max(1, page)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    rows, total = await repo.actions(session, account_id, offset=(page - 1) * per_page, limit=per_page)
    return ActionPage(
        account_id=account_id,
        page=page,
        per_page=per_page,
        total=total,
        actions=[
            ActionView(
                id=a.id,
                operation=a.operation,
                actor=a.actor,
                at=a.created_at,
                kind=a.kind,
                selected_all=a.selected_all,
                requested=a.requested,
                affected=a.affected,
                skipped=a.skipped,
                items=a.items,
            )
            for a in rows
        ],
    )
