"""A campaign's activity end to end: 1,000 synced Kommo contacts (1,020 addresses) get a sandbox campaign
with opens, clicks, bounces and complaints, whose hook deliveries arrive, some of them twice. Everything is
checked exactly against what the sandbox decided (its facts) and sent (its deliveries): one note per contact,
campaign and kind with the campaign's subject and the right count, the bounce and complaint tags, the
addresses' consent, and the campaigns view equal to the platform's own totals after a refresh.

Unisender's events carry no id, so two events of one address, status and second are one event to us (the
spec's dedupe rule); the sandbox plays a campaign in seconds, so repeated opens often share a second and the
expected counts are the facts' counted that way."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from app.config import Settings
from app.sync import campaigns
from sandbox.unisender import signed_body
from sandbox.unisender.campaigns import HARD_BOUNCES, SOFT_BOUNCES
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, kommo_contacts, wait_for, wait_quiet

pytestmark = pytest.mark.slow

CONTACTS = 1000
SUBJECT = "Winter sale"
LINKS = ["https://shop.example.com/coats", "https://shop.example.com/boots"]
RATES = {"opened": 0.3, "clicked": 0.1, "hard_bounce": 0.01, "soft_bounce": 0.01, "complaint": 0.005}
BOUNCE_TAG, COMPLAINT_TAG = "hard-bounce", "spam-complaint"
# status -> the note kind it counts towards (the spec's default kinds; ok_sent and ok_delivered write none)
KINDS = {
    "ok_read": "opened",
    "ok_link_visited": "clicked",
    "ok_fbl": "complained",
    **dict.fromkeys(HARD_BOUNCES, "hard_bounce"),
    **dict.fromkeys(SOFT_BOUNCES, "soft_bounce"),
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Not the defaults: a hard-coded tag anywhere would show.
    return settings.model_copy(update={"bounce_tag": BOUNCE_TAG, "complaint_tag": COMPLAINT_TAG})


async def _sql(stack: Stack, query: str, *args: Any) -> list[Any]:
    return await raw_sql(stack.settings.database_url or "", query, *args)


async def _contacts(stack: Stack, account: Account) -> dict[str, int]:
    """CONTACTS contacts, one address each and every 50th a second one; address -> Kommo id."""
    owner: dict[str, int] = {}
    for start in range(0, CONTACTS, 250):
        batch = [
            {
                "name": f"Person {i}",
                "custom_fields_values": [
                    {
                        "field_code": "EMAIL",
                        "values": [{"value": e} for e in _addresses(i)],
                    }
                ],
            }
            for i in range(start, min(start + 250, CONTACTS))
        ]
        r = await stack.kommo.post(
            f"/_sandbox/accounts/{account.subdomain}/contacts", params={"webhooks": 0}, json=batch
        )
        assert r.status_code == 200, r.text
        for i, made in zip(range(start, CONTACTS), r.json()["_embedded"]["contacts"], strict=False):
            owner.update(dict.fromkeys(_addresses(i), int(made["id"])))
    return owner


def _addresses(i: int) -> list[str]:
    return [f"p{i}@example.com"] + ([f"p{i}.work@example.com"] if i % 50 == 0 else [])


@dataclass
class _Note:
    times: set[str] = field(default_factory=set)  # distinct event times (an event's identity, with the rest)
    statuses: set[str] = field(default_factory=set)
    count: int = 0


def _expected_notes(
    sent: list[dict[str, Any]], owner: dict[str, int], campaign_id: int
) -> dict[int, list[str]]:
    """Per Kommo contact, the texts of its notes, from the events the sandbox sent (each counted once)."""
    seen: set[tuple[str, str, str]] = set()
    notes: dict[tuple[int, str], _Note] = defaultdict(_Note)
    for ev in sent:
        data = ev["event_data"]
        kind = KINDS.get(data.get("status", ""))
        if ev["event_name"] != "email_status" or kind is None or data["campaign_id"] != campaign_id:
            continue
        identity = (data["email"], data["status"], ev["event_time"])
        if identity in seen:
            continue
        seen.add(identity)
        note = notes[(owner[data["email"]], kind)]
        note.times.add(ev["event_time"])
        note.statuses.add(data["status"])
        note.count += 1
    texts: dict[int, list[str]] = defaultdict(list)
    for (kommo_id, kind), note in notes.items():
        texts[kommo_id].append(_text(kind, note))
    return {k: sorted(v) for k, v in texts.items()}


def _text(kind: str, note: _Note) -> str:
    c = f"“{SUBJECT}”"
    text = {
        "opened": f"Opened {c}",
        "clicked": f"Clicked a link in {c}",
        "soft_bounce": f"Soft bounce of {c}",
        "hard_bounce": f"Hard bounce of {c}: the address takes no more mail from this account",
        "complained": f"Marked {c} as spam: the address takes no more mail from this account",
    }[kind]
    if note.count > 1:
        text += f" ({note.count} times)"
    if kind in ("soft_bounce", "hard_bounce"):
        text += f"; status {', '.join(sorted(note.statuses))}"
    last = datetime.strptime(max(note.times), "%Y-%m-%d %H:%M:%S")
    return text + f"; last {last:%Y-%m-%d %H:%M} UTC"


def _check_facts_match_sent(facts: dict[str, dict[str, Any]], sent: list[dict[str, Any]]) -> None:
    """The deliveries carry exactly the facts' events (the expectations below are built from the latter)."""
    per: dict[str, list[str]] = defaultdict(list)
    for ev in sent:
        if ev["event_name"] == "email_status":
            per[ev["event_data"]["email"]].append(ev["event_data"]["status"])
    for email, fact in facts.items():
        statuses = per.pop(email)
        assert statuses.count("ok_read") == fact["opens"], email
        assert statuses.count("ok_link_visited") == len(fact["clicks"]), email
        assert ("ok_fbl" in statuses) == fact["complaint"], email
        if fact["send_result"] in HARD_BOUNCES + SOFT_BOUNCES:
            assert sorted(statuses) == sorted(["ok_sent", fact["send_result"]]), email
    assert not per, f"events for addresses outside the campaign: {sorted(per)[:5]}"


async def test_campaign_activity_notes_tags_consent_and_totals(stack: Stack) -> None:
    account = await connect_account(stack)
    api_key, base = account.api_key, f"/_sandbox/accounts/{account.api_key}"
    owner = await _contacts(stack, account)
    # A delivery our API refuses (a 503 when its database is slow to answer on a busy box) is sent again,
    # as Unisender does, but after half a second instead of ten minutes.
    stack.unisender_app.state.unisender.config.hook_retry_interval_seconds = 0.5
    async with running_worker(stack.settings) as pc:
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account, within=60)
        r = await stack.unisender.get(base)
        members = {int(lst["id"]): lst for lst in r.json()["lists"]}[account.list_id]
        assert members["members"] == len(owner) == 1020, members

        r = await stack.unisender.post(
            f"{base}/campaigns",
            json={
                "list_id": account.list_id,
                "subject": SUBJECT,
                "rates": RATES,
                "links": LINKS,
                "seed": 11,
                "duration_s": 2.0,
            },
        )
        assert r.status_code == 200, r.text
        campaign_id = r.json()["campaign_id"]

        last: dict[str, Any] = {}

        async def played() -> dict[str, Any] | None:
            facts: dict[str, Any] = (
                await stack.unisender.get(f"{base}/campaigns/{campaign_id}/facts")
            ).json()
            pending = (await stack.unisender.get("/_sandbox/deliveries", params={"api_key": api_key})).json()
            answers = Counter(
                f"{d['status_code'] or d['error']}:{len(d['events'])}" for d in pending["deliveries"]
            )
            last.update(status=facts["status"], pending=pending["pending"], answers=dict(answers))
            done = facts["status"] == "completed" and pending["pending"] == 0
            return facts if done else None

        # Generous: on a loaded box a delivery answered 503 (intake's database budget) waits its retry.
        try:
            await wait_for(played, within=60, what="the campaign played and every hook delivered")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen {last}") from None
        facts = await played()
        assert facts is not None
        deliveries = (await stack.unisender.get("/_sandbox/deliveries", params={"api_key": api_key})).json()
        delivered = [d for d in deliveries["deliveries"] if d["delivered"]]
        sent = [ev for d in delivered for ev in d["events"]]
        _check_facts_match_sent(facts["addresses"], sent)

        # Duplicates: whole bodies delivered again (a retry: retry_count, new auth), and single events
        # again inside new deliveries.
        for d in delivered[::10]:
            payload = json.loads(d["body"])
            payload.pop("auth")
            payload["retry_count"] = 1
            r = await stack.api.post(
                d["hook_url"],
                content=signed_body(api_key, payload),
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 200, r.text
        again = [ev for ev in sent if ev["event_data"].get("status") in KINDS][::7]
        r = await stack.unisender.post(f"{base}/hook-events", json={"events": again})
        assert r.status_code == 200, r.text

        expected = _expected_notes(sent, owner, campaign_id)
        activity_events = len(
            {
                (e["event_data"]["email"], e["event_data"]["status"], e["event_time"])
                for e in sent
                if e["event_name"] == "email_status" and e["event_data"]["status"] != "ok_sent"
            }
        )

        seen: dict[str, Any] = {}

        async def handled() -> bool:
            rows = await _sql(
                stack,
                "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'pending') AS p FROM email_activity",
            )
            seen.update(rows=dict(rows[0]), expected=activity_events)
            quiet = (await stack.unisender.get("/_sandbox/deliveries")).json()["pending"] == 0
            return quiet and rows[0]["n"] == activity_events and rows[0]["p"] == 0

        try:
            await wait_for(handled, within=30, what="every activity event recorded once and handled")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen {seen}") from None
        await wait_quiet(stack, account, within=30)

        # The notes: exactly one per contact, campaign and kind, named, with the count of distinct events.
        notes: dict[int, list[str]] = defaultdict(list)
        for n in (await stack.kommo.get(f"/_sandbox/accounts/{account.subdomain}/notes")).json():
            assert (n["note_type"], n["params"]["service"]) == ("service_message", "Unisender")
            notes[n["entity_id"]].append(n["params"]["text"])
        assert {k: sorted(v) for k, v in notes.items()} == expected
        states = await _sql(stack, "SELECT kind, state, count(*) AS n FROM email_activity GROUP BY 1, 2")
        assert {(r["kind"], r["state"]) for r in states} <= {
            ("delivered", "skipped"),
            *((k, "noted") for k in set(KINDS.values())),
        }

        # Tags and consent: hard bounces and complaints stop the address; soft bounces do not.
        hard = {e for e, f in facts["addresses"].items() if f["send_result"] in HARD_BOUNCES}
        spam = {e for e, f in facts["addresses"].items() if f["complaint"]}
        soft = {e for e, f in facts["addresses"].items() if f["send_result"] in SOFT_BOUNCES}
        assert min(len(hard), len(spam), len(soft)) > 0  # the seed draws every case
        want_tags: dict[int, set[str]] = {cid: set() for cid in owner.values()}
        for email, cid in owner.items():
            want_tags[cid] |= {BOUNCE_TAG} if email in hard else set()
            want_tags[cid] |= {COMPLAINT_TAG} if email in spam else set()

        async def tagged() -> bool:
            live = await kommo_contacts(stack, account)
            got = {cid: set(c["tags"]) & {BOUNCE_TAG, COMPLAINT_TAG} for cid, c in live.items()}  # type: ignore[call-overload]
            return got == want_tags

        await wait_for(tagged, within=20, what="the bounce and complaint tags on exactly those contacts")
        consent = {
            r["email"]: r["consent"] for r in await _sql(stack, "SELECT email, consent FROM contact_email")
        }
        assert consent == {
            e: "bounced" if e in hard else "complained" if e in spam else "subscribed" for e in owner
        }

        # The campaigns view after a refresh: the platform's own totals, bounces counted per recipient.
        await campaigns.refresh_campaigns(pc, account.account_id)
    r = await stack.unisender.get(
        "/en/api/getCampaignCommonStats",
        params={"format": "json", "api_key": api_key, "campaign_id": campaign_id},
    )
    common = r.json()["result"]
    r = await stack.api.get(f"/accounts/{account.account_id}/campaigns", headers=stack.admin_headers)
    assert r.status_code == 200, r.text
    (view,) = r.json()
    refreshed_at = view.pop("refreshed_at")
    assert datetime.fromisoformat(refreshed_at) <= datetime.now(UTC)
    started = datetime.fromisoformat(view.pop("started_at"))
    assert abs((datetime.now(UTC) - started).total_seconds()) < 120
    bounced = sum(f["send_result"] in HARD_BOUNCES + SOFT_BOUNCES for f in facts["addresses"].values())
    assert view == {
        "campaign_id": campaign_id,
        "subject": SUBJECT,
        "list_id": account.list_id,
        "status": "completed",
        "sent": common["sent"],
        "delivered": common["delivered"],
        "opened": common["read_unique"],
        "clicked": common["clicked_unique"],
        "bounced": bounced,
        "unsubscribed": common["unsubscribed"],
        "complained": common["spam"],
    }
    assert (common["sent"], common["spam"]) == (len(owner), len(spam))

    # Who may read it: the widget of this account too; nobody without credentials; unknown accounts are 404.
    token = (
        await stack.kommo.post(
            "/_sandbox/widget_token", json={"client_id": account.client_id, "subdomain": account.subdomain}
        )
    ).json()["token"]
    own = await stack.api.get(f"/accounts/{account.account_id}/campaigns", headers={"X-Auth-Token": token})
    assert (own.status_code, own.json()) == (200, r.json())
    assert (await stack.api.get(f"/accounts/{account.account_id}/campaigns")).status_code == 401
    r = await stack.api.get("/accounts/424242/campaigns", headers=stack.admin_headers)
    assert (r.status_code, r.json()["error"]) == (404, "unknown_account"), r.text
