"""Notes calls go out full: a round's part-filled call waits while its events are fresh (the next rounds fill
it), goes out once they are ``FILL_SECONDS`` old, and never waits when the round read a full batch and sent
nothing else (every round progresses). Real PostgreSQL, the Kommo sandbox over HTTP; the notes job is driven
directly so that each round is seen."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from app.context import build_context
from app.db.base import utcnow
from app.sync import activity, activity_repo
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, wait_quiet

EMAILS = ("ann@example.com", "bob@example.com")


async def _readers(stack: Stack) -> Account:
    """A connected account whose two contacts hold ``EMAILS``, mirrored; the worker stopped again, so that each
    round of the test is the test's."""
    account = await connect_account(stack)
    async with running_worker(stack.settings):
        for i, email in enumerate(EMAILS):
            r = await stack.kommo.post(
                f"/_sandbox/accounts/{account.subdomain}/contacts",
                json=[
                    {
                        "name": f"Reader {i}",
                        "custom_fields_values": [{"field_code": "EMAIL", "values": [{"value": email}]}],
                    }
                ],
            )
            assert r.status_code == 200, r.text
        await wait_quiet(stack, account)
    return account


async def _events(stack: Stack, account_id: int, campaigns: range, opens: int = 1) -> None:
    """``opens`` opens of each campaign by each address: one note per address and campaign."""
    pc = await build_context(stack.settings)
    try:
        rows = [
            activity_repo.NewActivity(
                email=email,
                kind="opened",
                campaign_id=c,
                list_id=None,
                status=None,
                occurred_at=utcnow(),
                event_key=f"{email}:{c}:{i}:{utcnow().timestamp()}",
            )
            for c in campaigns
            for email in EMAILS
            for i in range(opens)
        ]
        async with pc.db.session_scope() as session:
            await activity_repo.add_activity(session, account_id, rows)
    finally:
        await pc.close()


async def _round(stack: Stack, account_id: int) -> activity.NotesResult:
    pc = await build_context(stack.settings)
    try:
        return await activity.write_activity_notes(pc, account_id)
    finally:
        await pc.close()


async def _note_calls(stack: Stack) -> int:
    stats = (await stack.kommo.get("/_sandbox/stats")).json()
    return int(stats["calls"].get("POST /api/v4/contacts/notes", 0))


async def _age(stack: Stack, seconds: float) -> None:
    await raw_sql(
        stack.settings.database_url or "",
        f"UPDATE email_activity SET created_at = created_at - interval '{seconds} seconds'",
    )


async def _pending(stack: Stack) -> int:
    rows = await raw_sql(
        stack.settings.database_url or "", "SELECT count(*) AS n FROM email_activity WHERE state = 'pending'"
    )
    return int(rows[0]["n"])


async def test_a_part_filled_call_waits_while_fresh_and_full_calls_go_at_once(stack: Stack) -> None:
    account = await _readers(stack)
    calls = await _note_calls(stack)

    # 10 notes, just stored: held back, nothing sent, the events still pending.
    await _events(stack, account.account_id, range(1, 6))
    held = await _round(stack, account.account_id)
    assert (held.notes, held.more) == (0, False)
    assert 0 < held.wait <= activity.FILL_SECONDS
    assert await _note_calls(stack) == calls
    assert await _pending(stack) == 10

    # Once they are FILL_SECONDS old, the part-filled call goes out.
    await _age(stack, activity.FILL_SECONDS)
    sent = await _round(stack, account.account_id)
    assert (sent.notes, sent.wait) == (10, 0.0)
    assert await _note_calls(stack) == calls + 1
    assert await _pending(stack) == 0

    # 260 fresh notes: the full call of 250 goes at once, the 10 left wait for more.
    await _events(stack, account.account_id, range(100, 230))
    first = await _round(stack, account.account_id)
    assert first.notes == activity.NOTES_PER_CALL
    assert first.wait > 0
    assert await _note_calls(stack) == calls + 2
    assert await _pending(stack) == 10
    await _age(stack, activity.FILL_SECONDS)
    rest = await _round(stack, account.account_id)
    assert (rest.notes, rest.wait) == (10, 0.0)
    assert await _note_calls(stack) == calls + 3


async def test_a_full_read_that_fills_no_call_is_sent_at_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that read ``ROWS`` events (more may be pending behind them) and found fewer notes than a call
    holds sends them at once: holding them would make the next round read the same events again. The round
    after it, which reads all that is left, holds its part-filled call as usual."""
    monkeypatch.setattr(activity, "ROWS", 20)
    account = await _readers(stack)
    calls = await _note_calls(stack)
    await _events(stack, account.account_id, range(1, 2), opens=15)  # 30 events, 2 notes
    result = await _round(stack, account.account_id)
    # The first round read 20 events, 2 notes: sent at once. The second read the last 10 (a part-filled call
    # of the same 2 notes' new counts, all of the pending events): held.
    assert result.notes == 2
    assert await _note_calls(stack) == calls + 1
    assert await _pending(stack) == 10
    assert 0 < result.wait <= activity.FILL_SECONDS


async def test_a_backlog_round_carries_its_part_filled_call_to_the_next_round(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old events, more than a round reads: the round's part-filled call is not sent (however old its
    events), the next round puts it in front of the rest."""
    monkeypatch.setattr(activity, "ROWS", 260)
    account = await _readers(stack)
    calls = await _note_calls(stack)
    await _events(stack, account.account_id, range(1, 136))  # 270 events, 270 notes
    await _age(stack, 2 * activity.FILL_SECONDS)
    result = await _round(stack, account.account_id)
    # Round 1 read 260: one call of 250, its 10 carried; round 2 read the 20 left, old: one call of 20.
    assert (result.notes, result.wait) == (270, 0.0)
    assert await _note_calls(stack) == calls + 2
    assert await _pending(stack) == 0


def _groups_of(n: int, *, age: float) -> dict[Any, Any]:
    at = utcnow() - timedelta(seconds=age)
    return {(i, 1, "opened"): activity._Group(rows=[SimpleNamespace(created_at=at)]) for i in range(n)}  # type: ignore[list-item]


def test_new_and_updated_notes_are_cut_into_calls_of_their_own() -> None:
    groups = _groups_of(600, age=0.0)
    known: dict[Any, Any] = {key: object() for key in list(groups)[::3]}  # 200 updates, 400 new
    calls, held = activity._calls(groups, known, full_read=True)
    assert [len(c) for c in calls] == [250]  # the full call; both part-filled ones carried
    assert all(key not in known for key in calls[0])
    assert held == 0.0
    calls, held = activity._calls(groups, known, full_read=False)
    assert [len(c) for c in calls] == [250]  # fresh: both part-filled calls held
    assert 0 < held <= activity.FILL_SECONDS
    old = _groups_of(600, age=activity.FILL_SECONDS)
    calls, held = activity._calls(old, known, full_read=False)
    assert sorted(len(c) for c in calls) == [150, 200, 250]
    assert [all(k in known for k in c) for c in calls] == [False, False, True]
    assert held == 0.0
    few = _groups_of(30, age=0.0)
    calls, _ = activity._calls(few, {key: object() for key in list(few)[:10]}, full_read=True)
    assert sorted(len(c) for c in calls) == [10, 20]  # a full read that fills no call sends all
