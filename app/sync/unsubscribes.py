"""Unsubscribes flow back: Unisender's hook → consent recorded → the Kommo contact tagged; never undone."""

from __future__ import annotations

import structlog

from app.accounts.kommo import kommo_client_for
from app.connectors.unisender.exceptions import UnisenderHookParseError
from app.connectors.unisender.hooks import read_delivery
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.session import after_commit
from app.sync import repository as repo
from app.worker import enqueue

log = structlog.get_logger(__name__)


async def process_unisender_events(pc: ProcessContext, account_id: int) -> tuple[int, bool]:
    """Handle the account's pending Unisender events: record unsubscribes, mark the rest done; returns
    (events handled, busy)."""
    handled = 0
    for _ in range(20):
        async with pc.db.session_scope() as session:
            if not await repo.account_lock(session, account_id, wait=False):
                return handled, True
            events = await repo.pending_events(session, account_id, "unisender", 200)
            if not events:
                return handled, False
            new_unsubscribes: list[str] = []
            for ev in events:
                ev.attempts += 1
                try:
                    # One stored event (or, for rows stored before events were split, a whole delivery).
                    items = read_delivery(ev.body.encode()).events
                except UnisenderHookParseError as exc:
                    ev.status, ev.last_error, ev.handled_at = "failed", f"unparsable body: {exc}", utcnow()
                    continue
                for item in items:
                    # Only unsubscribes have an effect. Subscribes are the contact's own business (we never
                    # re-subscribe anyone); delivery and campaign statuses are kept for later use.
                    if (
                        item.unsubscribes
                        and item.email is not None
                        and await repo.mark_unsubscribed(session, account_id, item.email)
                    ):
                        new_unsubscribes.append(item.email)
                ev.status, ev.handled_at = "done", utcnow()
            await repo.cancel_outbox(session, account_id, new_unsubscribes, "unsubscribed")
            handled += len(events)
            if new_unsubscribes:
                after_commit(session, lambda: enqueue.tag_unsubscribes(pc.queue, account_id))
                log.info("unsubscribes.recorded", account_id=account_id, count=len(new_unsubscribes))
    return handled, False


async def tag_unsubscribed_contacts(pc: ProcessContext, account_id: int) -> int:
    """Tag, in Kommo, every live contact holding an unsubscribed address not yet written back."""
    tagged = 0
    async with pc.db.session_scope() as session:
        integ = await repo.get_integration(session, account_id)
        if integ is None or integ.status != "connected":
            return 0
        rows = await repo.untagged_unsubscribes(session, account_id)
        work = [(row.email, await repo.owners_holding(session, account_id, row.email)) for row in rows]
        client = await kommo_client_for(pc, account_id)
    tag = pc.settings.unsubscribe_tag
    for email, owners in work:
        for kommo_id in owners:
            await client.add_contact_tags(kommo_id, [tag])
            tagged += 1
        async with pc.db.session_scope() as session:
            consent = await repo.consent_rows(session, account_id, [email])
            if email in consent:
                consent[email].kommo_tagged_at = utcnow()
    if tagged:
        log.info("unsubscribes.tagged", account_id=account_id, contacts=tagged)
    return tagged
