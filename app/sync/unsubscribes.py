"""Unsubscribes flow back: Unisender's hook → consent recorded → the Kommo contact tagged; never undone.

The hook names the list of each unsubscribe (one event per list) but not whether the contact left one list or
everything, so the rule is: an address that unsubscribed from every list we put it in (or from an event that
names no list, or an ``email_status`` of unsubscribed) is unsubscribed from the account: never pushed again,
tagged ``unsubscribed``. An unsubscribe from some of its lists only keeps it out of those lists for good (it
stays in the others and its fields keep flowing), and tags the contact ``unsubscribed:<list title>``.

A hard bounce or a spam complaint stops the address the same way (consent ``bounced`` / ``complained``, its
own tag). Every event that reports a letter's fate (delivered, opened, clicked, bounced, complained,
unsubscribed) is also kept once in ``email_activity``, for the notes ``app.sync.activity`` writes to the
contact's timeline. A ``subscribe`` to a mapped list is a newsletter signup (``app.sync.signups``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.connectors.base import ActivityKind, EspHookEvent
from app.connectors.errors import WebhookParseError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import account_lock, tagging_lock, xact_lock
from app.db.models import WebhookEvent
from app.db.session import after_commit
from app.db.states import Consent, EventSource, EventStatus, IntegrationStatus
from app.queue import enqueue
from app.sync import (
    activity_repo,
    consent_repo,
    contacts_repo,
    inbox_repo,
    outbox_repo,
    providers,
    service,
    signups,
    two_way,
)
from app.sync.events import DEADLINE_SHARE, Alone, try_alone
from app.sync.isolation import ApplyFailed, in_halves, isolating

log = structlog.get_logger(__name__)


@dataclass
class _Batch:
    """What one transaction's events add up to."""

    suppressed: list[str] = field(default_factory=list)  # newly unsubscribed, bounced or complained
    per_list: set[str] = field(default_factory=set)  # left some of their lists
    activity: list[activity_repo.NewActivity] = field(default_factory=list)
    joined: list[signups.Joined] = field(default_factory=list)  # subscribes: maybe signups


ESP_ROUND_EVENTS = 200  # stored events per transaction
ESP_MAX_ROUNDS = 100  # bounded: a continuation job (or the sweeper) goes on


@dataclass
class EspDrain:
    handled: int = 0
    busy: bool = False  # another job drains the account's events: it takes ours too
    more: bool = False  # stopped at the deadline or the round cap: the caller enqueues a continuation


def _touches_mirror(item: EspHookEvent) -> bool:
    """Whether an event changes what we push (consent, lists, fields, signups), so its round must hold the
    account's mirror lock; an open, a click or a delivery only adds to ``email_activity``."""
    return bool(
        item.email is not None
        and (item.field_values or item.subscribed_lists or item.unsubscribes or item.activity in _STOPS)
    )


async def process_unisender_events(
    pc: ProcessContext, account_id: int, *, deadline: float | None = None
) -> EspDrain:
    """Handle the account's pending Unisender events: record unsubscribes, hard bounces and complaints (the
    address takes no more mail from us) and the activity to write to the CRM, mark the rest done.

    One drainer per account (the ``esp-events`` lock; a second job gives way with ``busy`` and looks again
    shortly). A round takes the account's mirror lock only when one of its events changes what we push:
    a campaign's opens and clicks arrive by the hundred thousand, and holding the mirror lock for them made
    live Kommo changes wait behind them (and filled the worker's job slots with waiters).
    """
    if deadline is None:
        deadline = time.monotonic() + DEADLINE_SHARE * pc.settings.worker_job_timeout
    result = EspDrain()
    set_aside: set[int] = set()  # failed alone in this job: left for a later job, so the others go on
    for round_no in range(ESP_MAX_ROUNDS):
        if round_no and time.monotonic() >= deadline:
            result.more = True
            return result
        try:
            found, suspects = await _round(pc, account_id, result, exclude=set_aside)
        except ApplyFailed as failed:
            # One event the database refuses (say, a value it cannot store) must not hold back the account's
            # others, unsubscribes first: the round is applied again in halves down to single events, and one
            # failing alone is set aside, failed after MAX_EVENT_ATTEMPTS (GET /accounts/{id}, dead letters).
            log.warning("unisender_events.round_failed", account_id=account_id, reason=failed.reason)
            isolated = await in_halves(
                failed.ids,
                group=lambda ids: _round(pc, account_id, result, only=ids),
                alone=lambda event_id: _alone(pc, account_id, event_id, result),
                set_aside=set_aside,
                deadline=deadline,
            )
            if not isolated:
                result.more = True
                return result
            continue
        for event_id in suspects:
            if time.monotonic() >= deadline:
                result.more = True
                return result
            if not await _alone(pc, account_id, event_id, result):
                set_aside.add(event_id)
        if not found:
            return result
    result.more = True
    return result


async def _alone(pc: ProcessContext, account_id: int, event_id: int, result: EspDrain) -> bool:
    """One event in a transaction of its own (``events.try_alone``); False if it failed."""
    outcome = await try_alone(
        pc,
        event_id,
        lambda: _round(pc, account_id, result, only=[event_id], counted=True),
        log_as="unisender_events",
        account_id=account_id,
    )
    return outcome is Alone.APPLIED


async def _round(
    pc: ProcessContext,
    account_id: int,
    result: EspDrain,
    *,
    only: list[int] | None = None,
    exclude: set[int] | None = None,
    counted: bool = False,
) -> tuple[bool, list[int]]:
    """One transaction: the next pending events (or the pending ones of ``only``; ``counted``: their attempt
    was counted already) handled and marked done. Returns whether there were any (False also when another job drains
    the account) and the ones that failed alone before, left out to be tried alone again. Raises
    ``ApplyFailed`` (rolled back) when handling fails for a reason the events may have caused."""
    async with pc.db.session_scope() as session:
        if not await xact_lock(session, f"esp-events:{account_id}", wait=only is not None):
            result.busy = True
            return False, []
        suspects: list[int] = []
        if only is None:
            events = await inbox_repo.pending_events(
                session, account_id, EventSource.UNISENDER, ESP_ROUND_EVENTS, exclude=exclude
            )
            suspects = [ev.id for ev in events if ev.last_error is not None]
            found = bool(events)
            events = [ev for ev in events if ev.last_error is None]
        else:
            events = await inbox_repo.pending_events_by_ids(session, account_id, only)
            found = bool(events)
        if events:
            with isolating([ev.id for ev in events]):
                await _handle_events(session, pc, account_id, events, counted=counted)
            result.handled += len(events)
    return found, suspects


async def _handle_events(
    session: AsyncSession, pc: ProcessContext, account_id: int, events: list[WebhookEvent], *, counted: bool
) -> None:
    parsed: list[tuple[WebhookEvent, list[EspHookEvent]]] = []
    for ev in events:
        if not counted:
            ev.attempts += 1
        try:
            # One stored event (or, for rows stored before events were split, a whole delivery).
            parsed.append((ev, list(providers.read_esp_hook(ev.body.encode()).events)))
        except WebhookParseError as exc:
            ev.status, ev.last_error, ev.handled_at = (
                EventStatus.FAILED,
                f"unparsable body: {exc}",
                utcnow(),
            )
    if any(_touches_mirror(item) for _, items in parsed for item in items):
        # Waits rather than giving way: its holder (a Kommo events job, a walk's chunk, a full sync's
        # page) drains its own work, not these events, and holds the lock for milliseconds.
        await account_lock(session, account_id)
    batch = _Batch()
    for ev, items in parsed:
        for i, item in enumerate(items):
            await _handle(session, account_id, item, f"{ev.dedupe_key}:{i}", ev.received_at, batch)
        ev.status, ev.handled_at = EventStatus.DONE, utcnow()
    await outbox_repo.cancel_outbox(session, account_id, batch.suppressed, "unsubscribed")
    # The address's desired state no longer names those lists to join (nor to leave).
    await service.recompute(session, account_id, batch.per_list - set(batch.suppressed))
    await activity_repo.add_activity(session, account_id, batch.activity)
    if await signups.record_signups(session, account_id, batch.joined):
        after_commit(session, lambda: enqueue.signup_contacts(pc.queue, account_id))
    if batch.suppressed or batch.per_list:
        after_commit(session, lambda: enqueue.tag_unsubscribes(pc.queue, account_id))
        log.info("unsubscribes.recorded", account_id=account_id, count=len(batch.suppressed))
    if batch.activity:
        after_commit(session, lambda: enqueue.activity_notes_window(pc.queue, account_id))


TAG_ROUNDS = 20  # per job; the sweeper finds what is left
TAG_ROUNDS_ROWS = 500

_STOPS = {ActivityKind.HARD_BOUNCE: Consent.BOUNCED, ActivityKind.COMPLAINED: Consent.COMPLAINED}


async def _handle(
    session: AsyncSession, account_id: int, item: EspHookEvent, key: str, received_at: datetime, batch: _Batch
) -> None:
    """One event: an unsubscribe, hard bounce or complaint stops the address (an unsubscribe from some lists
    only keeps it out of those); any activity is kept for the CRM; a subscribe may be a signup (we never
    re-subscribe anyone); campaign statuses are not the address's activity."""
    if item.email is None:
        return
    if item.field_values:  # a field edited in the platform: two-way fields flow back (app.sync.two_way)
        await two_way.on_hook_event(session, account_id, item, received_at)
    if item.subscribed_lists:
        batch.joined.append((item.email, item.subscribed_lists))
    kind = item.activity
    if kind is not None:
        lists = item.unsubscribed_lists
        batch.activity.append(
            activity_repo.NewActivity(
                email=item.email,
                kind=kind.value,
                campaign_id=item.campaign_id,
                list_id=lists[0] if lists else None,
                status=item.status,
                occurred_at=item.time or received_at,
                event_key=hashlib.sha256(key.encode()).hexdigest(),
            )
        )
    if item.unsubscribes:
        lists = item.unsubscribed_lists
        if lists and not await _leaves_everything(session, account_id, item.email, lists):
            batch.per_list.add(item.email)
        elif await consent_repo.mark_unsubscribed(session, account_id, item.email):
            batch.suppressed.append(item.email)
    elif kind in _STOPS and await consent_repo.mark_unsubscribed(
        session, account_id, item.email, _STOPS[kind]
    ):
        batch.suppressed.append(item.email)


async def _leaves_everything(
    session: AsyncSession, account_id: int, email: str, lists: tuple[int, ...]
) -> bool:
    """Record the address's unsubscribe from ``lists``; True when it now left every list we put it in."""
    for list_id in lists:
        await consent_repo.mark_list_unsubscribed(session, account_id, email, list_id)
    held = (await outbox_repo.pushed_state(session, account_id, [email])).get(email, (None, None))[1]
    if not held or held.get("delete") or "lists" not in held:
        return True  # nothing of ours to stay in (or pushed before per-list lists existed: the one list)
    gone = (await consent_repo.list_unsubscribes(session, account_id, [email])).get(email, frozenset())
    return set(held["lists"]) <= gone


async def tag_unsubscribed_contacts(pc: ProcessContext, account_id: int) -> int:
    """Tag, in Kommo, every live contact holding an address that takes no more mail (unsubscribed, hard-
    bounced, complained: each its own tag) or that left one list (``unsubscribed:<list title>``), not yet
    written back; returns the contacts tagged.

    Rounds of up to ``TAG_ROUNDS_ROWS`` addresses, each one transaction under the account's tagging lock (a
    second job gives way at once: the holder takes every untagged address), the tags of a round sent in
    batch PATCHes of 250 contacts. A contact Kommo refuses (deleted meanwhile) is not retried."""
    tags = {
        Consent.UNSUBSCRIBED: pc.settings.unsubscribe_tag,
        Consent.BOUNCED: pc.settings.bounce_tag,
        Consent.COMPLAINED: pc.settings.complaint_tag,
    }
    tagged = 0
    for _ in range(TAG_ROUNDS):
        async with pc.db.session_scope() as session:
            if not await tagging_lock(session, account_id, wait=False):
                return tagged
            integ = await accounts_repo.get_integration(session, account_id)
            if integ is None or integ.status != IntegrationStatus.CONNECTED:
                return tagged
            rows = await consent_repo.untagged_unsubscribes(session, account_id, TAG_ROUNDS_ROWS)
            per_list = await consent_repo.untagged_list_unsubscribes(session, account_id, TAG_ROUNDS_ROWS)
            if not rows and not per_list:
                break
            wanted: dict[int, list[str]] = {}
            for row in rows:
                for kommo_id in await contacts_repo.owners_holding(session, account_id, row.email):
                    wanted.setdefault(kommo_id, []).append(tags.get(row.consent, pc.settings.unsubscribe_tag))
            if per_list:
                esp, _ = await providers.esp_client(session, pc, account_id)
                titles = {lst.id: lst.title for lst in await esp.get_lists()}
                for lrow in per_list:
                    tag = f"{pc.settings.unsubscribe_tag}:{titles.get(lrow.list_id, lrow.list_id)}"
                    for kommo_id in await contacts_repo.owners_holding(session, account_id, lrow.email):
                        wanted.setdefault(kommo_id, []).append(tag)
            client = await providers.crm_client(pc, account_id)
            answer = await client.add_tags(wanted)
            now = utcnow()
            for row in rows:
                row.kommo_tagged_at = now
            for lrow in per_list:
                lrow.kommo_tagged_at = now
            tagged += len(answer.written)
            if answer.refused:
                log.warning("unsubscribes.tags_refused", account_id=account_id, contacts=len(answer.refused))
    if tagged:
        log.info("unsubscribes.tagged", account_id=account_id, contacts=tagged)
    return tagged
