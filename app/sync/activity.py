"""Email activity on the CRM contact's timeline: the events ``unsubscribes`` kept in ``email_activity``
become notes on the contact that owns the address.

Rules:
- Which kinds are written is the account's spec (``activity``; default opened, clicked, bounced,
  complained); the other kinds are marked ``skipped``.
- One note per contact, campaign and kind: a second open of a campaign does not add a note, it updates the
  first one's count (``activity_note`` remembers the note). Events of one round are counted together first.
- An address no live contact holds is marked ``no_contact`` (shown in the account's view, never written).
- Rounds of at most ``ROWS`` events, notes sent ``NOTES_PER_CALL`` at a time inside the CRM client's rate
  budget, each round one transaction under the account's notes lock: two jobs never write the same notes.
  A note is recorded as written only after the CRM answered. The CRM has no idempotency key for notes, so
  each note about to be added is first an intent (``activity_note_intent``, in the round's transaction,
  which commits what was recorded when a call fails): after a call whose answer was lost (a timeout, a 5xx)
  the next round lists the service notes changed since and adopts the ones it finds with exactly the text
  sent, and drops the intents of the others (never added). A worker killed in the middle of a call loses its
  round's transaction, intents included, so that call's notes may be added again (the one case left).
- Calls go out full (``_calls``): Kommo's 7 calls a second are the whole integration's, so a call of 100
  notes costs what one of 250 does. A part-filled call waits while its events are fresher than
  ``FILL_SECONDS`` (a campaign's events arrive round after round; the next rounds fill it), or, in a
  backlog, goes to the front of the next round; a round that fills no call sends what it has.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.connectors.base import ActivityKind, CrmClient, CrmNote, NotesWritten
from app.connectors.errors import ConnectorError
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import xact_lock
from app.db.models import ActivityNote, EmailActivity
from app.db.states import ActivityState, IntegrationStatus
from app.sync import activity_repo, campaigns, campaigns_repo, consent_repo, providers, spec_repo
from app.sync.activity_repo import NoteKey

log = structlog.get_logger(__name__)

ROWS = 2000  # events per round: ~2 events a note, so a round fills several calls of 250 notes
NOTES_PER_CALL = 250  # Kommo's batch cap: the notes' pace is its 7 calls a second
MAX_ROUNDS = 20  # per job; a follow-up job continues
FILL_SECONDS = 2.0  # how long a part-filled call's events wait for more (see the module's docstring)
SERVICE = "Unisender"  # the notes' source as the CRM shows it
# Notes added since an intent was written are looked for from this many seconds before it: the CRM stamps
# them with its own clock.
INTENT_CLOCK_MARGIN = 120
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # an adopted note's "last event": its pending events set it

# How each kind reads on the timeline; {c} is the campaign ("“Spring sale”", or "campaign #42").
_TEXTS = {
    ActivityKind.DELIVERED: "Delivered: {c}",
    ActivityKind.OPENED: "Opened {c}",
    ActivityKind.CLICKED: "Clicked a link in {c}",
    ActivityKind.SOFT_BOUNCE: "Soft bounce of {c}",
    ActivityKind.HARD_BOUNCE: "Hard bounce of {c}: the address takes no more mail from this account",
    ActivityKind.COMPLAINED: "Marked {c} as spam: the address takes no more mail from this account",
    ActivityKind.UNSUBSCRIBED: "Unsubscribed",
}


@dataclass
class _Group:
    """The events of one note (contact, campaign, kind) in this round."""

    rows: list[EmailActivity] = field(default_factory=list)
    last_at: datetime | None = None
    statuses: set[str] = field(default_factory=set)
    lists: set[int] = field(default_factory=set)


@dataclass
class NotesResult:
    notes: int = 0  # notes added or updated
    events: int = 0  # events handled (noted, skipped or without contact)
    more: bool = False  # stopped at MAX_ROUNDS or the deadline with events left
    wait: float = 0.0  # a part-filled call was held back: look again after this many seconds


async def write_activity_notes(pc: ProcessContext, account_id: int) -> NotesResult:
    """Write the account's pending activity to its CRM contacts (bounded; ``more`` asks for another job).
    A CRM error ends the job after recording what was written; the worker retries it."""
    result = NotesResult()
    looked_up = False  # campaign names missing from the cache are looked up once per job
    # Rounds stop well inside the job timeout: a round cancelled after Kommo took its notes would roll back
    # their record, and the retry would write them again.
    deadline = time.monotonic() + 0.5 * pc.settings.worker_job_timeout
    for _ in range(MAX_ROUNDS):
        if time.monotonic() > deadline:
            break
        failure: ConnectorError | None = None
        async with pc.db.session_scope() as session:
            if not await xact_lock(session, f"notes:{account_id}", wait=False):
                return result  # another job writes this account's notes; it drains them
            integ = await accounts_repo.get_integration(session, account_id)
            if integ is None or integ.status != IntegrationStatus.CONNECTED:
                return result
            rows = await activity_repo.pending_activity(session, account_id, ROWS)
            if not rows:
                return result
            _, spec = await spec_repo.current_spec(session, account_id)
            client = await providers.crm_client(pc, account_id)
            await _settle_intents(session, client, account_id)
            groups = await _groups(session, account_id, rows, set(spec.activity), result)
            known = await activity_repo.notes_for(session, account_id, list(groups))
            calls, held = _calls(groups, known, full_read=len(rows) == ROWS)
            ids = {key[1] for chunk in calls for key in chunk}
            names = await campaigns_repo.names(session, account_id, ids) if ids else {}
            if not looked_up and ids - names.keys() - {0}:
                looked_up = True
                names |= await campaigns.names_of_unknown(pc, account_id, ids - names.keys())
            for chunk in calls:
                notes = [_note(key, groups[key], known.get(key), names) for key in chunk]
                adds = [(_key_of(n.key), n.text) for n in notes if n.note_id is None]
                await activity_repo.add_intents(session, account_id, adds)
                try:
                    written = await client.write_notes(notes, service=SERVICE)
                except ConnectorError as exc:
                    # What earlier calls wrote is recorded (the round commits); this call's rows stay
                    # pending, and its intents tell the next round to look for what it may have added.
                    failure = exc
                    break
                await _record(session, account_id, notes, written, groups, known, result)
                await activity_repo.drop_intents(session, account_id, [key for key, _ in adds])
        if failure is not None:
            log.warning("activity.notes_failed", account_id=account_id, error=type(failure).__name__)
            raise failure
        if held and len(rows) < ROWS:
            result.wait = held  # every pending event was read: nothing more to fill it with yet
            return result
    result.more = True
    return result


def _calls(
    groups: Mapping[NoteKey, _Group], known: Mapping[NoteKey, ActivityNote], *, full_read: bool
) -> tuple[list[list[NoteKey]], float]:
    """The round's calls to send now, and how long a part-filled one held back may still wait (0: none held).

    New notes and updated ones are separate calls (a POST and a PATCH), so each kind is cut into calls of
    ``NOTES_PER_CALL`` on its own. A part-filled last call of a kind is held back: after a full read (more
    events wait behind this round) when the round sends a full call, so the next round, at once, puts it in
    front of a full one; after reading every pending event, while its oldest event is fresher than
    ``FILL_SECONDS``. A full read that fills no call sends everything, so every round progresses."""
    adds = [key for key in groups if key not in known]
    updates = [key for key in groups if key in known]
    full: list[list[NoteKey]] = []
    tails: list[list[NoteKey]] = []
    for keys in (adds, updates):
        for start in range(0, len(keys), NOTES_PER_CALL):
            chunk = keys[start : start + NOTES_PER_CALL]
            (full if len(chunk) == NOTES_PER_CALL else tails).append(chunk)
    if full_read:
        return (full, 0.0) if full else (tails, 0.0)
    calls, held = list(full), 0.0
    for tail in tails:
        wait = _fill_wait(groups, tail)
        if wait:
            held = max(held, wait)  # its events stay pending: a later round sends them with more
        else:
            calls.append(tail)
    return calls, held


def _fill_wait(groups: Mapping[NoteKey, _Group], chunk: Sequence[NoteKey]) -> float:
    """Seconds the part-filled call of ``chunk`` may still wait for more notes (0: send it now): until its
    oldest event has been stored ``FILL_SECONDS``."""
    oldest = min(r.created_at for key in chunk for r in groups[key].rows)
    age = (utcnow() - oldest).total_seconds()
    return min(FILL_SECONDS, FILL_SECONDS - age) if age < FILL_SECONDS else 0.0


async def _settle_intents(session: AsyncSession, client: CrmClient, account_id: int) -> None:
    """Notes a call was adding when its answer was lost (a timeout, a gateway's 5xx, the process killed
    mid-call) may be in the CRM: the ones found there with exactly the text sent are adopted (their events,
    still pending, then update them as any known note), the others were never added. Nothing is written twice.
    """
    pending = await activity_repo.intents(session, account_id)
    if not pending:
        return
    since = int(min(i.created_at for i in pending).timestamp()) - INTENT_CLOCK_MARGIN
    found = await client.find_service_notes(service=SERVICE, since=since)
    adopted = [
        activity_repo.SavedNote(
            i.kommo_id, i.campaign_id, i.kind, note_id=found[(i.kommo_id, i.text)], count=0, last_at=_EPOCH
        )
        for i in pending
        if (i.kommo_id, i.text) in found
    ]
    await activity_repo.save_notes(session, account_id, adopted)
    await activity_repo.drop_intents(
        session, account_id, [(i.kommo_id, i.campaign_id, i.kind) for i in pending]
    )
    log.info(
        "activity.intents_settled",
        account_id=account_id,
        adopted=len(adopted),
        absent=len(pending) - len(adopted),
    )


async def _record(
    session: AsyncSession,
    account_id: int,
    notes: Sequence[CrmNote],
    written: NotesWritten,
    groups: Mapping[NoteKey, _Group],
    known: Mapping[NoteKey, ActivityNote],
    result: NotesResult,
) -> None:
    """What one call wrote, in three statements: the notes remembered, their events noted, the refused
    ones' events marked (a note neither written nor refused stays pending for the next round)."""
    saved: list[activity_repo.SavedNote] = []
    noted: list[int] = []
    refused: list[int] = []
    for note in notes:
        key = _key_of(note.key)
        group = groups[key]
        if note.key in written.written:
            before = known.get(key)
            saved.append(
                activity_repo.SavedNote(
                    *key,
                    note_id=written.written[note.key],
                    count=_count(group, before),
                    last_at=_last(group, before),
                )
            )
            noted += [r.id for r in group.rows]
        elif note.key in written.refused:
            refused += [r.id for r in group.rows]
    await activity_repo.save_notes(session, account_id, saved)
    await activity_repo.set_state(session, noted, ActivityState.NOTED)
    await activity_repo.set_state(session, refused, ActivityState.NO_CONTACT)
    result.notes += len(saved)
    result.events += len(noted) + len(refused)


async def _groups(
    session: AsyncSession,
    account_id: int,
    rows: Sequence[EmailActivity],
    kinds: set[str],
    result: NotesResult,
) -> dict[NoteKey, _Group]:
    """The round's events by note; events of kinds the spec does not write, and of addresses no live
    contact holds, are marked here."""
    wanted = [r for r in rows if r.kind in kinds]
    skipped = [r.id for r in rows if r.kind not in kinds]
    await activity_repo.set_state(session, skipped, ActivityState.SKIPPED)
    owners = await consent_repo.owner_ids(session, account_id, sorted({r.email for r in wanted}))
    groups: dict[NoteKey, _Group] = {}
    lost: list[int] = []
    for r in wanted:
        owner = owners.get(r.email)
        if owner is None:
            lost.append(r.id)
            continue
        group = groups.setdefault((owner, r.campaign_id or 0, r.kind), _Group())
        group.rows.append(r)
        group.last_at = r.occurred_at if group.last_at is None else max(group.last_at, r.occurred_at)
        if r.status:
            group.statuses.add(r.status)
        if r.list_id:
            group.lists.add(r.list_id)
    await activity_repo.set_state(session, lost, ActivityState.NO_CONTACT)
    result.events += len(skipped) + len(lost)
    return groups


def _note(key: NoteKey, group: _Group, known: ActivityNote | None, names: Mapping[int, str]) -> CrmNote:
    """The note of one contact, campaign and kind: the first, or the one written before with its new count."""
    kommo_id, campaign_id, kind = key
    count = _count(group, known)
    campaign = f"“{names[campaign_id]}”" if campaign_id in names else f"campaign #{campaign_id}"
    text = _TEXTS[ActivityKind(kind)].format(c=campaign if campaign_id else "a letter")
    if kind == ActivityKind.UNSUBSCRIBED:
        lists = ", ".join(f"#{i}" for i in sorted(group.lists))
        text += (f" from list {lists}" if lists else " from every list") + (
            f" ({campaign})" if campaign_id else ""
        )
    if count > 1:
        text += f" ({count} times)"
    if group.statuses and kind in (ActivityKind.SOFT_BOUNCE, ActivityKind.HARD_BOUNCE):
        text += f"; status {', '.join(sorted(group.statuses))}"
    text += f"; last {_last(group, known):%Y-%m-%d %H:%M} UTC"
    return CrmNote(
        contact_id=kommo_id,
        text=text,
        key=f"{kommo_id}:{campaign_id}:{kind}",
        note_id=known.note_id if known is not None else None,
    )


def _key_of(text: str) -> NoteKey:
    kommo_id, campaign_id, kind = text.split(":", 2)
    return int(kommo_id), int(campaign_id), kind


def _count(group: _Group, known: ActivityNote | None) -> int:
    return (known.count if known is not None else 0) + len(group.rows)


def _last(group: _Group, known: ActivityNote | None) -> datetime:
    assert group.last_at is not None  # a group has at least one event
    return group.last_at if known is None else max(known.last_at, group.last_at)
