"""Simulated campaigns: who gets what (drawn once from a seeded ``random.Random``: the *facts*), and the
timeline that plays those facts out over ``duration_s``: state changes plus hook events.

Per recipient (the list's members with an active membership, an address and status ``new`` or ``active``,
in person_id order), one draw each, in this order:

- delivery: ``hard_bounce`` → one of ``HARD_BOUNCES``; else ``soft_bounce`` → one of ``SOFT_BOUNCES``; else
  ``delivered`` → delivered; else the letter stays ``ok_sent`` (no result yet). ``delivered`` defaults to
  ``1 - hard_bounce - soft_bounce``;
- for a delivered letter: ``opened`` → 1-3 opens; ``clicked`` (independently; a click without a tracked open
  happens when images are off) → 1-2 clicks on links drawn from ``links``; ``complaint`` → ``ok_fbl``, else
  ``unsubscribe`` → ``ok_unsubscribed`` (the address's membership of the campaign's list is unsubscribed).

``send_result`` is the furthest status reached: ``ok_sent`` < ``ok_delivered`` < ``ok_read`` <
``ok_link_visited`` < ``ok_unsubscribed``/``ok_fbl``; errors are final. Timeline (fractions of the
duration): ``campaign_status`` ``in_progress`` at 0; per recipient ``ok_sent`` in [0, .2), its result .2
later at most, opens within .15 after it, clicks .15-.3 after it, the complaint or unsubscribe .35-.4
after it; ``campaign_status`` ``completed`` at 1. Every open is an ``ok_read`` event, every click an
``ok_link_visited`` event; an unsubscribe is an ``email_status`` ``ok_unsubscribed`` and an ``unsubscribe``
``{"email", "list_id"}`` (the latter only if the membership changed).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sandbox.unisender.hooks import HookDispatcher, event
from sandbox.unisender.state import Account, Contact, SandboxState, fmt_time

HARD_BOUNCES = ("err_user_unknown", "err_domain_inactive", "err_dest_invalid")
SOFT_BOUNCES = ("err_mailbox_full", "err_giveup")
DELIVERED = frozenset({"ok_delivered", "ok_read", "ok_link_visited", "ok_unsubscribed", "ok_fbl"})
_RANK = {"not_sent": 0, "ok_sent": 1, "ok_delivered": 2, "ok_read": 3, "ok_link_visited": 4}
_FINAL_RANK = 5  # ok_unsubscribed, ok_fbl and every error
# §13.3 names success_pending_group only; the others are the sandbox's (spam_group is its own addition).
_GROUPS = {
    "ok_sent": "success_pending_group",
    "ok_delivered": "success_pending_group",
    "ok_read": "success_group",
    "ok_link_visited": "success_group",
    "ok_unsubscribed": "unsubscribed_group",
    "ok_fbl": "spam_group",
}
# How long the runner waits after one batch before the next, so events close in time share one POST.
BATCH_INTERVAL = 0.02


def status_group(status: str) -> str:
    """The ``status_group`` an ``email_status`` event carries."""
    return _GROUPS.get(status, "error_group")


def rank(status: str) -> int:
    """How far a letter got (a final status outranks everything)."""
    return _RANK.get(status, _FINAL_RANK)


@dataclass
class Rates:
    """Per-recipient probabilities (see the module docstring for how they combine)."""

    delivered: float
    opened: float
    clicked: float
    soft_bounce: float
    hard_bounce: float
    complaint: float
    unsubscribe: float


@dataclass
class Fact:
    """What happens to one recipient's letter, decided at creation."""

    email: str
    person_id: int
    send_result: str
    opens: int = 0
    clicks: list[str] = field(default_factory=list)
    unsubscribed: bool = False
    complained: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "send_result": self.send_result,
            "opens": self.opens,
            "clicks": list(self.clicks),
            "unsubscribe": self.unsubscribed,
            "complaint": self.complained,
        }


@dataclass
class Visit:
    url: str
    at: str
    ip: str


@dataclass
class Record:
    """What has happened so far to one recipient's letter (the stats methods read these)."""

    email: str
    person_id: int
    send_result: str
    last_update: str
    opens: int = 0
    visits: list[Visit] = field(default_factory=list)
    unsubscribed: bool = False
    complained: bool = False


@dataclass(order=True)
class Step:
    """One planned event: ``kind`` is ``status`` (email_status) or ``campaign`` (campaign_status)."""

    offset: float
    seq: int
    kind: str = field(compare=False)
    status: str = field(compare=False)
    email: str | None = field(default=None, compare=False)
    url: str | None = field(default=None, compare=False)


@dataclass
class Campaign:
    """A campaign of one account, its facts, its progress and its remaining timeline."""

    id: int
    list_id: int
    subject: str
    sender_name: str
    sender_email: str
    message_id: int
    created: datetime
    duration_s: float
    seed: int
    links: list[str]
    rates: Rates
    status: str = "scheduled"
    facts: dict[str, Fact] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    emitted: int = 0  # steps played so far

    @property
    def created_at(self) -> str:
        return fmt_time(self.created)

    def summary(self) -> dict[str, Any]:
        """getCampaigns' view of the campaign (``stats_url`` points at the control API's facts)."""
        return {
            "id": self.id,
            "start_time": self.created_at,
            "status": self.status,
            "message_id": self.message_id,
            "list_id": self.list_id,
            "subject": self.subject,
            "sender_name": self.sender_name,
            "sender_email": self.sender_email,
            "stats_url": "",
        }


def ip_of(person_id: int) -> str:
    """A documentation-range address per recipient (getVisitedLinks' ``ip``)."""
    return f"198.51.100.{person_id % 250 + 1}"


def recipients(account: Account, list_id: int) -> list[Contact]:
    """The list's members a campaign goes to, in person_id order."""
    out: list[Contact] = []
    for pid in sorted(account.lists[list_id].members):
        contact = account.contacts_by_id.get(pid)
        if contact is None or contact.email is None or contact.status not in ("new", "active"):
            continue
        membership = contact.lists.get(list_id)
        if membership is not None and membership.status == "active":
            out.append(contact)
    return out


def _draw(rng: random.Random, rates: Rates, links: list[str], contact: Contact) -> Fact:
    assert contact.email is not None
    fact = Fact(email=contact.email, person_id=contact.person_id, send_result="ok_sent")
    u = rng.random()
    if u < rates.hard_bounce:
        fact.send_result = rng.choice(HARD_BOUNCES)
        return fact
    if u < rates.hard_bounce + rates.soft_bounce:
        fact.send_result = rng.choice(SOFT_BOUNCES)
        return fact
    if u >= rates.hard_bounce + rates.soft_bounce + rates.delivered:
        return fact  # sent, no result yet
    fact.send_result = "ok_delivered"
    if rng.random() < rates.opened:
        fact.opens = 1 + rng.randrange(3)
        fact.send_result = "ok_read"
    if rng.random() < rates.clicked and links:
        fact.clicks = [rng.choice(links) for _ in range(1 + rng.randrange(2))]
        fact.send_result = "ok_link_visited"
    v = rng.random()
    if v < rates.complaint:
        fact.complained = True
        fact.send_result = "ok_fbl"
    elif v < rates.complaint + rates.unsubscribe:
        fact.unsubscribed = True
        fact.send_result = "ok_unsubscribed"
    return fact


def plan(campaign: Campaign, contacts: list[Contact]) -> None:
    """Draw the facts (seeded) and lay out the timeline; every record starts ``not_sent``."""
    rng = random.Random(campaign.seed)
    timing = random.Random(f"{campaign.seed}/timeline")
    d = campaign.duration_s
    steps: list[Step] = []

    def add(offset: float, kind: str, status: str, email: str | None = None, url: str | None = None) -> None:
        steps.append(Step(offset, len(steps), kind, status, email, url))

    add(0.0, "campaign", "in_progress")
    for contact in contacts:
        fact = _draw(rng, campaign.rates, campaign.links, contact)
        campaign.facts[fact.email] = fact
        campaign.records[fact.email] = Record(fact.email, fact.person_id, "not_sent", campaign.created_at)
        sent = timing.uniform(0.0, 0.2) * d
        add(sent, "status", "ok_sent", fact.email)
        if fact.send_result == "ok_sent":
            continue
        result = sent + timing.uniform(0.0, 0.2) * d
        bounced = fact.send_result not in DELIVERED
        add(result, "status", fact.send_result if bounced else "ok_delivered", fact.email)
        for open_at in sorted(result + timing.uniform(0.0, 0.15) * d for _ in range(fact.opens)):
            add(open_at, "status", "ok_read", fact.email)
        for url in fact.clicks:
            add(result + timing.uniform(0.15, 0.3) * d, "status", "ok_link_visited", fact.email, url)
        if fact.complained:
            add(result + timing.uniform(0.35, 0.4) * d, "status", "ok_fbl", fact.email)
        if fact.unsubscribed:
            add(result + timing.uniform(0.35, 0.4) * d, "status", "ok_unsubscribed", fact.email)
    add(d, "campaign", "completed")
    campaign.steps = sorted(steps)


def _apply(account: Account, campaign: Campaign, step: Step) -> list[dict[str, Any]]:
    """Play one step: update the records and the contact, return its hook events."""
    when = fmt_time(campaign.created + timedelta(seconds=step.offset))
    if step.kind == "campaign":
        campaign.status = step.status
        return [event("campaign_status", when, {"campaign_id": campaign.id, "status": step.status})]
    assert step.email is not None
    record = campaign.records[step.email]
    status = step.status
    if rank(status) > rank(record.send_result):
        record.send_result = status
        record.last_update = when
    contact = account.contacts_by_email.get(step.email)
    events = [
        event(
            "email_status",
            when,
            {
                "email": step.email,
                "status": status,
                "status_group": status_group(status),
                "campaign_id": campaign.id,
            },
        )
    ]
    activity = contact.activity if contact is not None else {}
    if status == "ok_sent":
        activity["last_send_datetime"] = when
    elif status == "ok_delivered":
        activity["last_delivery_datetime"] = when
    elif status == "ok_read":
        record.opens += 1
        activity["last_read_datetime"] = when
    elif status == "ok_link_visited":
        record.visits.append(Visit(step.url or "", when, ip_of(record.person_id)))
        activity["last_click_datetime"] = when
    elif status == "ok_fbl":
        record.complained = True
    elif status == "ok_unsubscribed":
        record.unsubscribed = True
        membership = contact.lists.get(campaign.list_id) if contact is not None else None
        if membership is not None and membership.status != "unsubscribed":
            membership.status = "unsubscribed"
            events.append(event("unsubscribe", when, {"email": step.email, "list_id": campaign.list_id}))
    elif contact is not None:  # a bounce
        hard = status in HARD_BOUNCES
        contact.availability = (
            "unreachable" if hard else "mailbox_full" if status == "err_mailbox_full" else "temp_unreachable"
        )
    return events


async def run(state: SandboxState, dispatcher: HookDispatcher, account: Account, campaign: Campaign) -> None:
    """Play the timeline in real time; the steps due together go out as one batch of hook events."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while campaign.emitted < len(campaign.steps):
        if state.accounts.get(account.api_key) is not account:
            return  # the sandbox was reset
        due = campaign.steps[campaign.emitted].offset
        delay = start + due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elapsed = loop.time() - start
        events: list[dict[str, Any]] = []
        while campaign.emitted < len(campaign.steps) and campaign.steps[campaign.emitted].offset <= elapsed:
            events.extend(_apply(account, campaign, campaign.steps[campaign.emitted]))
            campaign.emitted += 1
        dispatcher.emit(account, events)
        if campaign.emitted < len(campaign.steps):
            await asyncio.sleep(BATCH_INTERVAL)
