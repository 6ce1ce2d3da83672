"""Email activity back to Kommo, end to end: Unisender's hook reports letters delivered, opened, clicked,
bounced and marked as spam; each becomes one note per contact, campaign and kind on the contact's timeline
(repeated opens: one note whose count goes up), hard bounces and complaints stop the address (consent, tag,
nothing pushed any more), kinds the spec does not write and unknown addresses are recorded, not written,
and a delivery sent twice counts once."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import Settings
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, create_contact, kommo_contacts, wait_for, wait_quiet

CAMPAIGN = 4242
# The faults below hit the notes call alone: another Kommo call coming first (the reconcile cron's read) must
# not take them.
NOTES_ADD = "POST /api/v4/contacts/notes"
READER, BOUNCER, COMPLAINER = "ann@example.com", "bob@example.com", "cid@example.com"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Not the defaults: a hard-coded tag anywhere would show.
    return settings.model_copy(update={"bounce_tag": "hard-bounce", "complaint_tag": "spam-complaint"})


async def _hook(stack: Stack, account: Account, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Unisender's hook delivers these events (name, time, data), signed, in the batched layout."""
    body = {"events": [{"event_name": n, "event_time": t, "event_data": d} for n, t, d in events]}
    r = await stack.unisender.post(f"/_sandbox/accounts/{account.api_key}/hook-events", json=body)
    assert r.status_code == 200, r.text


def _status(email: str, status: str, when: str) -> tuple[str, str, dict[str, Any]]:
    return ("email_status", when, {"email": email, "status": status, "campaign_id": CAMPAIGN})


async def _notes(stack: Stack, account: Account, cid: int) -> list[str]:
    r = await stack.kommo.get(f"/_sandbox/accounts/{account.subdomain}/notes", params={"entity_id": cid})
    assert r.status_code == 200, r.text
    notes = r.json()
    assert all(n["note_type"] == "service_message" and n["params"]["service"] == "Unisender" for n in notes)
    return sorted(n["params"]["text"] for n in notes)


async def _sql(stack: Stack, query: str, *args: Any) -> list[Any]:
    return await raw_sql(stack.settings.database_url or "", query, *args)


async def _campaign(stack: Stack, account: Account, subject: str) -> None:
    """The campaign as the campaigns refresh would have cached it (its name for the notes)."""
    await _sql(
        stack,
        "INSERT INTO campaign (account_id, campaign_id, subject, refreshed_at) VALUES ($1, $2, $3, now())",
        account.account_id,
        CAMPAIGN,
        subject,
    )


async def test_activity_becomes_notes_tags_and_consent(stack: Stack) -> None:
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        ann = await create_contact(stack, account, "Ann", READER)
        bob = await create_contact(stack, account, "Bob", BOUNCER)
        cid = await create_contact(stack, account, "Cid", COMPLAINER)
        await wait_quiet(stack, account)
        await _campaign(stack, account, "Spring sale")
        events = [
            _status(READER, "ok_delivered", "2026-11-30 10:00:00"),
            _status(READER, "ok_read", "2026-11-30 10:05:00"),
            _status(READER, "ok_read", "2026-11-30 11:00:00"),
            _status(READER, "ok_link_visited", "2026-11-30 11:01:00"),
            _status(BOUNCER, "err_user_unknown", "2026-11-30 10:00:30"),
            _status(COMPLAINER, "ok_fbl", "2026-11-30 12:00:00"),
            _status("stranger@example.com", "ok_read", "2026-11-30 12:30:00"),
        ]
        await _hook(stack, account, events)
        await _hook(stack, account, events[1:3])  # the same opens delivered again: counted once

        async def noted() -> bool:
            # One statement: two would let the hook's rows land between them (none pending, then all there).
            [row] = await _sql(
                stack,
                "SELECT count(*) AS total, count(*) FILTER (WHERE state = 'pending') AS pending"
                " FROM email_activity",
            )
            return int(row["total"]) == len(events) and int(row["pending"]) == 0

        await wait_for(noted, within=30, what="every activity event handled")
        assert await _notes(stack, account, ann) == [
            "Clicked a link in “Spring sale”; last 2026-11-30 11:01 UTC",
            "Opened “Spring sale” (2 times); last 2026-11-30 11:00 UTC",
        ]
        assert await _notes(stack, account, bob) == [
            "Hard bounce of “Spring sale”: the address takes no more mail from this account; "
            "status err_user_unknown; last 2026-11-30 10:00 UTC"
        ]
        assert await _notes(stack, account, cid) == [
            "Marked “Spring sale” as spam: the address takes no more mail from this account; "
            "last 2026-11-30 12:00 UTC"
        ]
        states = await _sql(stack, "SELECT email, kind, state FROM email_activity ORDER BY id")
        assert {(r["email"], r["kind"], r["state"]) for r in states} == {
            (READER, "delivered", "skipped"),  # not in the default kinds
            (READER, "opened", "noted"),
            (READER, "clicked", "noted"),
            (BOUNCER, "hard_bounce", "noted"),
            (COMPLAINER, "complained", "noted"),
            ("stranger@example.com", "opened", "no_contact"),
        }

        async def tagged() -> bool:
            contacts = await kommo_contacts(stack, account)
            return "hard-bounce" in contacts[bob]["tags"] and "spam-complaint" in contacts[cid]["tags"]  # type: ignore[operator]

        await wait_for(tagged, within=30, what="the bounce and complaint tags on the contacts")
        consent = await _sql(stack, "SELECT email, consent FROM contact_email ORDER BY email")
        assert {r["email"]: r["consent"] for r in consent} == {
            READER: "subscribed",
            BOUNCER: "bounced",
            COMPLAINER: "complained",
        }

        # A later open of the same campaign updates the count of the note written before.
        await _hook(stack, account, [_status(READER, "ok_read", "2026-11-30 13:00:00")])

        async def recounted() -> bool:
            return "Opened “Spring sale” (3 times); last 2026-11-30 13:00 UTC" in await _notes(
                stack, account, ann
            )

        await wait_for(recounted, within=30, what="the open note's count going to 3")
        assert len(await _notes(stack, account, ann)) == 2

        # The stopped addresses are not pushed any more; the others are.
        ledger = f"/_sandbox/accounts/{account.api_key}/ledger"
        before = {
            e: (await stack.unisender.get(ledger, params={"email": e})).json()["total"]
            for e in (READER, BOUNCER)
        }
        for contact_id, name in ((ann, "Ann Renamed"), (bob, "Bob Renamed")):
            r = await stack.kommo.patch(
                f"/_sandbox/accounts/{account.subdomain}/contacts", json=[{"id": contact_id, "name": name}]
            )
            assert r.status_code == 200, r.text
        await wait_quiet(stack, account)
        after = {
            e: (await stack.unisender.get(ledger, params={"email": e})).json()["total"]
            for e in (READER, BOUNCER)
        }
        assert after == {READER: before[READER] + 1, BOUNCER: before[BOUNCER]}


@pytest.mark.parametrize(
    ("fault", "answered"),
    [
        # Kommo adds the notes but the answer never comes (a gateway's 504): the retry finds them.
        ({"lost_answers": 1, "only": NOTES_ADD}, f"{NOTES_ADD} 504"),
        # Kommo refuses the call before doing anything: the retry finds nothing and adds them once.
        ({"burst_429": 1, "only": NOTES_ADD}, f"{NOTES_ADD} 429"),
    ],
    ids=["applied-answer-lost", "refused-before-applying"],
)
async def test_a_notes_call_that_failed_is_followed_by_each_note_exactly_once(
    stack: Stack, fault: dict[str, int], answered: str
) -> None:
    """The notes call fails and the job is retried: the retry looks up what the failed call may have added
    (its intents were committed with the round) and adopts what it finds instead of adding a second copy, and
    adds what is not there."""
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        ann = await create_contact(stack, account, "Ann", READER)
        await wait_quiet(stack, account)
        await _campaign(stack, account, "Autumn sale")
        r = await stack.kommo.post("/_sandbox/faults", json=fault)
        assert r.status_code == 200, r.text
        events = [
            _status(READER, "ok_read", "2026-11-30 10:05:00"),
            _status(READER, "ok_read", "2026-11-30 10:06:00"),
            _status(READER, "ok_link_visited", "2026-11-30 10:07:00"),
        ]
        await _hook(stack, account, events)

        async def noted() -> bool:
            rows = await _sql(
                stack, "SELECT count(*) FILTER (WHERE state = 'noted') AS n FROM email_activity"
            )
            return int(rows[0]["n"]) == len(events)

        await wait_for(noted, within=30, what="every activity event noted")
        stats = (await stack.kommo.get("/_sandbox/stats")).json()
        assert stats["responses"][answered] == 1  # the notes' first add failed this way
        assert await _notes(stack, account, ann) == [
            "Clicked a link in “Autumn sale”; last 2026-11-30 10:07 UTC",
            "Opened “Autumn sale” (2 times); last 2026-11-30 10:06 UTC",
        ]
        kept = await _sql(stack, "SELECT kind, note_id, count FROM activity_note ORDER BY kind")
        listed = (
            await stack.kommo.get(f"/_sandbox/accounts/{account.subdomain}/notes", params={"entity_id": ann})
        ).json()
        assert {r["note_id"] for r in kept} == {n["id"] for n in listed}
        assert [(r["kind"], r["count"]) for r in kept] == [("clicked", 1), ("opened", 2)]
        assert await _sql(stack, "SELECT * FROM activity_note_intent") == []
