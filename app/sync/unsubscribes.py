"""Unsubscribes flow back: Unisender's hook → consent recorded → the Kommo contact tagged; never undone.

The hook names the list of each unsubscribe (one event per list) but not whether the contact left one list or
everything, so the rule is: an address that unsubscribed from every list we put it in (or from an event that
names no list, or an ``email_status`` of unsubscribed) is unsubscribed from the account: never pushed again,
tagged ``unsubscribed``. An unsubscribe from some of its lists only keeps it out of those lists for good (it
stays in the others and its fields keep flowing), and tags the contact ``unsubscribed:<list title>``.

A hard bounce or a spam complaint stops the address the same way (consent ``bounced`` / ``complained``, its
own tag). Every event that reports a letter's fate (delivered, opened, clicked, bounced, complained,
unsubscribed) is also kept once in ``email_activity``, for the notes ``app.sync.activity`` writes to the
contact's timeline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.connectors.base import ActivityKind, EspHookEvent
from app.connectors.errors import WebhookParseError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import account_lock
from app.db.session import after_commit
from app.db.states import Consent, EventSource, EventStatus, IntegrationStatus
from app.queue import enqueue
from app.sync import activity_repo, consent_repo, contacts_repo, inbox_repo, outbox_repo, providers, service

log = structlog.get_logger(__name__)


@dataclass
class _Batch:
    """What one transaction's events add up to."""

    suppressed: list[str] = field(default_factory=list)  # newly unsubscribed, bounced or complained
    per_list: set[str] = field(default_factory=set)  # left some of their lists
    activity: list[activity_repo.NewActivity] = field(default_factory=list)


async def process_unisender_events(pc: ProcessContext, account_id: int) -> tuple[int, bool]:
    """Handle the account's pending Unisender events: record unsubscribes, hard bounces and complaints (the
    address takes no more mail from us) and the activity to write to the CRM, mark the rest done; returns
    (events handled, busy)."""
    handled = 0
    for _ in range(20):
        async with pc.db.session_scope() as session:
            if not await account_lock(session, account_id, wait=False):
                return handled, True
            events = await inbox_repo.pending_events(session, account_id, EventSource.UNISENDER, 200)
            if not events:
                return handled, False
            batch = _Batch()
            for ev in events:
                ev.attempts += 1
                try:
                    # One stored event (or, for rows stored before events were split, a whole delivery).
                    items = providers.read_esp_hook(ev.body.encode()).events
                except WebhookParseError as exc:
                    ev.status, ev.last_error, ev.handled_at = (
                        EventStatus.FAILED,
                        f"unparsable body: {exc}",
                        utcnow(),
                    )
                    continue
                for i, item in enumerate(items):
                    await _handle(session, account_id, item, f"{ev.dedupe_key}:{i}", ev.received_at, batch)
                ev.status, ev.handled_at = EventStatus.DONE, utcnow()
            await outbox_repo.cancel_outbox(session, account_id, batch.suppressed, "unsubscribed")
            # The address's desired state no longer names those lists to join (nor to leave).
            await service.recompute(session, account_id, batch.per_list - set(batch.suppressed))
            await activity_repo.add_activity(session, account_id, batch.activity)
            handled += len(events)
            if batch.suppressed or batch.per_list:
                after_commit(session, lambda: enqueue.tag_unsubscribes(pc.queue, account_id))
                log.info("unsubscribes.recorded", account_id=account_id, count=len(batch.suppressed))
            if batch.activity:
                after_commit(session, lambda: enqueue.activity_notes(pc.queue, account_id))
    return handled, False


_STOPS = {ActivityKind.HARD_BOUNCE: Consent.BOUNCED, ActivityKind.COMPLAINED: Consent.COMPLAINED}


async def _handle(
    session: AsyncSession, account_id: int, item: EspHookEvent, key: str, received_at: datetime, batch: _Batch
) -> None:
    """One event: an unsubscribe, hard bounce or complaint stops the address (an unsubscribe from some lists
    only keeps it out of those); any activity is kept for the CRM. Subscribes are the contact's own
    business (we never re-subscribe anyone); campaign statuses are not the address's activity."""
    if item.email is None:
        return
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
    bounced, complained: each its own tag) not yet written back."""
    tagged = 0
    async with pc.db.session_scope() as session:
        integ = await accounts_repo.get_integration(session, account_id)
        if integ is None or integ.status != IntegrationStatus.CONNECTED:
            return 0
        rows = await consent_repo.untagged_unsubscribes(session, account_id)
        work = [
            (row.email, row.consent, await contacts_repo.owners_holding(session, account_id, row.email))
            for row in rows
        ]
    client = await providers.crm_client(pc, account_id)  # after the session: it reads through its own
    tags = {
        Consent.UNSUBSCRIBED: pc.settings.unsubscribe_tag,
        Consent.BOUNCED: pc.settings.bounce_tag,
        Consent.COMPLAINED: pc.settings.complaint_tag,
    }
    for email, consent, owners in work:
        tag = tags.get(consent, pc.settings.unsubscribe_tag)
        for kommo_id in owners:
            await client.add_contact_tags(kommo_id, [tag])
            tagged += 1
        async with pc.db.session_scope() as session:
            await consent_repo.mark_tagged(session, account_id, email, utcnow())
    tagged += await _tag_list_unsubscribes(pc, account_id)
    if tagged:
        log.info("unsubscribes.tagged", account_id=account_id, contacts=tagged)
    return tagged


async def _tag_list_unsubscribes(pc: ProcessContext, account_id: int) -> int:
    """Tag ``unsubscribed:<list title>`` on the contacts holding an address that left one list."""
    async with pc.db.session_scope() as session:
        rows = await consent_repo.untagged_list_unsubscribes(session, account_id)
        if not rows:
            return 0
        work = [
            (row.email, row.list_id, await contacts_repo.owners_holding(session, account_id, row.email))
            for row in rows
        ]
        esp, _ = await providers.esp_client(session, pc, account_id)
    titles = {lst.id: lst.title for lst in await esp.get_lists()}
    client = await providers.crm_client(pc, account_id)
    tagged = 0
    for email, list_id, owners in work:
        tag = f"{pc.settings.unsubscribe_tag}:{titles.get(list_id, list_id)}"
        for kommo_id in owners:
            await client.add_contact_tags(kommo_id, [tag])
            tagged += 1
        async with pc.db.session_scope() as session:
            await consent_repo.mark_list_tagged(session, account_id, email, list_id, utcnow())
    return tagged
