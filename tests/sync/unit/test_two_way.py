"""The two-way rule (``app.sync.two_way``) on the real database, each test inside a rolled-back transaction:
echoes dropped, the later change winning, a tie going to the CRM, and what each outcome leaves in the
outbox, the contact and ``crm_write``."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectors.base import CrmContact, CrmFieldValue
from app.db.base import utcnow
from app.db.models import Contact, CrmWrite, Outbox
from app.db.states import CrmWriteState, OutboxStatus
from app.sync import crm_writes_repo, outbox_repo, service, spec_repo, two_way
from app.sync.crm_writes import _catch_up, plan_writes
from app.sync.spec import Direction, FieldRule, ListRule, SourceKind, SourceRef, StoredSpec
from app.sync.two_way import DataChange, Outcome

_IDS = itertools.count(random.randrange(10**12, 10**13, 10**6) + 7)
EMAIL = "ann@x.io"
PLAN, SCORE = 500, 501
KOMMO_AT = 1_800_000_000  # the contact's CRM version time


def _rule(target: str, field_id: int, kommo_type: str, target_type: str) -> FieldRule:
    ref = SourceRef(kind=SourceKind.CUSTOM_FIELD, field_id=field_id, type=kommo_type, name=target)
    return FieldRule(
        source=[f"custom_field:{field_id}"],
        target=target,
        direction=Direction.BOTH,
        sources=[ref],
        target_type=target_type,
    )


SPEC = StoredSpec(
    fields=[
        _rule("Plan", PLAN, "text", "string"),
        _rule("Score", SCORE, "numeric", "number"),
        FieldRule(
            source=["name"],
            target="Name",
            sources=[SourceRef(kind=SourceKind.NAME, type="text", name="Name")],
            target_type="string",
        ),
    ],
    lists=[ListRule(base=True, all=True)],
)


@pytest.fixture
async def account(session: AsyncSession) -> int:
    """An account with a two-way spec and one contact whose state Unisender accepted (pushed)."""
    account_id = next(_IDS)
    # Written as plain SQL: the secrets are never read here, so they need no encryption.
    await session.execute(
        text(
            "INSERT INTO integration (account_id, subdomain, client_id, client_secret, redirect_uri,"
            " webhook_token_hash, status, created_at, updated_at)"
            " VALUES (:a, 'acc', 'c', 's', 'https://x', :h, 'connected', now(), now())"
        ),
        {"a": account_id, "h": "0" * 64},
    )
    await spec_repo.store_spec(session, account_id, SPEC)
    await _version(session, account_id, KOMMO_AT, plan="gold")
    rows = await outbox_repo.lock_outbox(session, account_id, [EMAIL])
    await outbox_repo.mark_pushed(session, [rows[EMAIL].id], utcnow())
    return account_id


async def _version(session: AsyncSession, account: int, at: int, *, plan: str, score: str = "12.5") -> None:
    """A CRM webhook's version of the contact, applied and derived."""
    contact = CrmContact(
        id=1,
        name="Ann",
        updated_at=at,
        emails=(EMAIL,),
        fields=(CrmFieldValue(PLAN, (plan,)), CrmFieldValue(SCORE, (score,))),
    )
    applied = await service.apply_contacts(session, account, [contact])
    await service.recompute(session, account, applied.affected)


def _change(value: str, at: int, target: str = "Plan", email: str = EMAIL) -> DataChange:
    return DataChange(email, target, value, datetime.fromtimestamp(at, UTC))


async def _outbox(session: AsyncSession, account: int) -> Outbox:
    stmt = select(Outbox).where(Outbox.account_id == account).execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one()


async def _writes(session: AsyncSession, account: int) -> list[CrmWrite]:
    stmt = select(CrmWrite).where(CrmWrite.account_id == account).order_by(CrmWrite.id)
    return list((await session.execute(stmt.execution_options(populate_existing=True))).scalars())


async def _data(session: AsyncSession, account: int) -> dict[str, Any]:
    stmt = select(Contact.data).where(Contact.account_id == account, Contact.kommo_id == 1)
    data: dict[str, Any] = (
        await session.execute(stmt.execution_options(populate_existing=True))
    ).scalar_one()
    return data


async def test_our_own_value_coming_back_is_an_echo(session: AsyncSession, account: int) -> None:
    assert await two_way.apply_change(session, account, _change("gold", KOMMO_AT + 60)) is Outcome.ECHO
    # Spelled differently, the same number is still our own write.
    assert (
        await two_way.apply_change(session, account, _change("12.50", KOMMO_AT + 60, "Score")) is Outcome.ECHO
    )
    row = await _outbox(session, account)
    assert (row.status, row.pushed_payload["fields"]["Plan"]) == (OutboxStatus.DONE, "gold")  # type: ignore[index]
    assert await _writes(session, account) == []


@pytest.mark.parametrize("at", [KOMMO_AT, KOMMO_AT - 1], ids=["tie", "older"])
async def test_the_crm_wins_a_tie_and_an_older_platform_change(
    session: AsyncSession, account: int, at: int
) -> None:
    assert await two_way.apply_change(session, account, _change("silver", at)) is Outcome.CRM_WINS
    row = await _outbox(session, account)
    # Unisender holds "silver" now: the CRM's "gold" is queued to go back.
    assert row.pushed_payload is not None
    assert row.pushed_payload["fields"]["Plan"] == "silver"
    assert (row.status, row.payload["fields"]["Plan"]) == (OutboxStatus.PENDING, "gold")
    assert await _writes(session, account) == []
    assert (await _data(session, account))["fields"][str(PLAN)] == ["gold"]


async def test_a_later_platform_change_wins_and_its_crm_echo_pushes_nothing(
    session: AsyncSession, account: int
) -> None:
    outcome = await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 1))
    assert outcome is Outcome.PLATFORM_WINS
    [write] = await _writes(session, account)
    assert (write.kommo_id, write.source, write.field_type, write.value, write.state) == (
        1,
        f"custom_field:{PLAN}",
        "text",
        "silver",
        CrmWriteState.PENDING,
    )
    assert (await _data(session, account))["fields"][str(PLAN)] == ["silver"]  # our copy took it already
    row = await _outbox(session, account)
    assert row.pushed_payload is not None
    assert (row.status, row.pushed_payload["fields"]["Plan"]) == (OutboxStatus.DONE, "silver")
    # The CRM's webhook for our write brings "silver" back: nothing to push.
    await _version(session, account, KOMMO_AT + 5, plan="silver")
    assert (await _outbox(session, account)).status == OutboxStatus.DONE


async def test_a_crm_edit_of_another_field_does_not_beat_a_later_platform_change(
    session: AsyncSession, account: int
) -> None:
    """Conflicts are judged per field: Plan last changed in the CRM at KOMMO_AT; the contact's Score changed at
    +10. Unisender's Plan change at +5 is later than Plan's own CRM change, so it wins."""
    await _version(session, account, KOMMO_AT + 10, plan="gold", score="13")
    outcome = await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5))
    assert outcome is Outcome.PLATFORM_WINS
    [write] = await _writes(session, account)
    assert (write.value, write.crm_before) == ("silver", "gold")  # the CRM value it won over
    assert (await _data(session, account))["fields"][str(PLAN)] == ["silver"]
    # The same field changed in the CRM after the platform's change: the CRM wins that one.
    await _version(session, account, KOMMO_AT + 20, plan="platinum", score="13")
    assert await two_way.apply_change(session, account, _change("bronze", KOMMO_AT + 15)) is Outcome.CRM_WINS
    # Within the same second as the field's CRM change: a tie, the CRM's.
    assert await two_way.apply_change(session, account, _change("copper", KOMMO_AT + 20)) is Outcome.CRM_WINS
    assert await two_way.apply_change(session, account, _change("tin", KOMMO_AT + 21)) is (
        Outcome.PLATFORM_WINS
    )


async def test_a_platform_win_stamps_the_field_and_the_crm_echo_keeps_it(
    session: AsyncSession, account: int
) -> None:
    """After the platform's value won at +5, a later platform change is judged against +5, even once the CRM's
    webhook for our write (a version at +30 carrying the same value) has come back."""
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    await _version(session, account, KOMMO_AT + 30, plan="silver")
    assert await _times(session, account) == {
        "*": KOMMO_AT,
        f"custom_field:{PLAN}": KOMMO_AT + 5,
        "@": KOMMO_AT + 30,
    }
    assert (
        await two_way.apply_change(session, account, _change("bronze", KOMMO_AT + 6)) is Outcome.PLATFORM_WINS
    )


async def test_a_row_without_change_times_is_judged_by_the_contact_s_version(
    session: AsyncSession, account: int
) -> None:
    """Rows stored before per-field times existed: the contact's version time stands for every field."""
    await _version(session, account, KOMMO_AT + 10, plan="gold", score="13")
    await session.execute(text("UPDATE contact SET field_times = NULL WHERE account_id = :a"), {"a": account})
    assert await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.CRM_WINS
    # The contact's next version starts keeping them, from the version it replaces.
    await _version(session, account, KOMMO_AT + 12, plan="gold", score="14")
    assert await _times(session, account) == {
        "*": KOMMO_AT + 10,
        f"custom_field:{SCORE}": KOMMO_AT + 12,
        "@": KOMMO_AT + 12,
    }


async def test_times_an_older_release_did_not_keep_up_are_not_trusted(
    session: AsyncSession, account: int
) -> None:
    """During a rolling upgrade a process of the previous release moves a row to a new version without
    touching its times (here: Plan changed at +10 behind their back): judged by the contact's version."""
    await session.execute(
        text(
            "UPDATE contact SET kommo_updated_at = :v,"
            " data = jsonb_set(data::jsonb, '{fields,500}', '[\"platinum\"]')::json WHERE account_id = :a"
        ),
        {"a": account, "v": KOMMO_AT + 10},
    )
    assert await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.CRM_WINS


async def test_an_edit_undone_within_one_burst_still_dates_the_field(
    session: AsyncSession, account: int
) -> None:
    """Kommo changed Plan to "silver" at +10 and back to "gold" at +12, both versions in one call: Plan's value
    is the one we held, but Kommo last changed it at +12, so a platform change at +11 loses."""
    versions = [
        CrmContact(
            id=1,
            name="Ann",
            updated_at=KOMMO_AT + at,
            emails=(EMAIL,),
            fields=(CrmFieldValue(PLAN, (plan,)), CrmFieldValue(SCORE, ("12.5",))),
        )
        for at, plan in ((12, "gold"), (10, "silver"))  # in any order
    ]
    applied = await service.apply_contacts(session, account, versions)
    await service.recompute(session, account, applied.affected)
    times = await _times(session, account)
    assert times is not None
    assert times[f"custom_field:{PLAN}"] == KOMMO_AT + 12
    assert await two_way.apply_change(session, account, _change("bronze", KOMMO_AT + 11)) is Outcome.CRM_WINS


async def _times(session: AsyncSession, account: int) -> dict[str, int] | None:
    stmt = select(Contact.field_times).where(Contact.account_id == account, Contact.kommo_id == 1)
    times: dict[str, int] | None = (
        await session.execute(stmt.execution_options(populate_existing=True))
    ).scalar_one()
    return times


async def test_a_platform_value_the_contact_already_holds_is_not_written(
    session: AsyncSession, account: int
) -> None:
    # Kommo changed to "silver" (not pushed yet); Unisender's user typed "silver" too, later.
    await _version(session, account, KOMMO_AT + 1, plan="silver")
    assert (await _outbox(session, account)).status == OutboxStatus.PENDING
    outcome = await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 2))
    assert outcome is Outcome.ALREADY_HELD
    assert await _writes(session, account) == []
    assert (await _outbox(session, account)).status == OutboxStatus.DONE  # the queued push is moot


async def test_a_value_without_a_crm_form_fails_and_the_crm_value_goes_back(
    session: AsyncSession, account: int
) -> None:
    outcome = await two_way.apply_change(session, account, _change("lots", KOMMO_AT + 1, "Score"))
    assert outcome is Outcome.UNCONVERTIBLE
    [write] = await _writes(session, account)
    assert write.state == CrmWriteState.FAILED
    assert "not a number" in (write.last_error or "")
    row = await _outbox(session, account)
    assert (row.status, row.payload["fields"]["Score"]) == (OutboxStatus.PENDING, "12.5")


async def test_changes_without_a_rule_or_an_owner_are_ignored(session: AsyncSession, account: int) -> None:
    late = KOMMO_AT + 1
    assert await two_way.apply_change(session, account, _change("Bob", late, "Name")) is Outcome.NO_RULE
    assert await two_way.apply_change(session, account, _change("x", late, "Unmapped")) is Outcome.NO_RULE
    nobody = _change("x", late, email="nobody@x.io")
    assert await two_way.apply_change(session, account, nobody) is Outcome.NO_OWNER
    assert await _writes(session, account) == []
    assert (await _outbox(session, account)).status == OutboxStatus.DONE


def _row(id_: int, kommo_id: int, source: str, value: str, seconds: int, kind: str = "text") -> CrmWrite:
    """A pending write of the platform's change made ``seconds`` after ``KOMMO_AT``."""
    return CrmWrite(
        id=id_,
        kommo_id=kommo_id,
        email=f"c{kommo_id}@x.io",
        source=source,
        field_type=kind,
        target="T",
        value=value,
        unisender_at=datetime.fromtimestamp(KOMMO_AT + seconds, UTC),
    )


def test_pending_writes_coalesce_to_the_latest_value_per_contact_and_field() -> None:
    row = _row
    plan = plan_writes(
        [
            row(1, 7, "custom_field:5", "first", 10),
            row(2, 7, "custom_field:5", "later", 12),
            row(3, 7, "custom_field:5", "earlier, arrived last", 11),
            row(4, 7, "name", "Ann B", 10),
            row(5, 8, "custom_field:6", "3,5", 10, "numeric"),
            row(6, 8, "custom_field:9", "x", 10, "multiselect"),
        ]
    )
    assert sorted(plan.superseded) == [1, 3]
    assert plan.failed.keys() == {6}
    by_contact = {w.contact_id: w for w in plan.writes}
    assert (by_contact[7].attributes, by_contact[7].fields) == ((("name", "Ann B"),), ((5, "later"),))
    assert (by_contact[8].attributes, by_contact[8].fields) == ((), ((6, 3.5),))
    assert plan.ids == {"c7": [2, 4], "c8": [5]}


def test_a_write_the_crm_changed_at_or_after_is_dropped_and_goes_back() -> None:
    rows = [
        _row(1, 7, "custom_field:5", "older than Kommo's live version", 10),
        _row(2, 7, "name", "same second as Kommo's live version", 20),
        _row(3, 8, "custom_field:5", "later than Kommo's live version", 31),
        _row(4, 9, "custom_field:5", "its contact is gone", 40),
    ]
    plan = plan_writes(rows, {7: KOMMO_AT + 20, 8: KOMMO_AT + 30})
    assert [(w.contact_id, w.fields) for w in plan.writes] == [(8, ((5, "later than Kommo's live version"),))]
    assert sorted(plan.stale_ids) == [1, 2, 4]
    assert "gone" in plan.stale_ids[4]
    assert plan.stale == {7: {"c7@x.io"}, 9: {"c9@x.io"}}


async def test_a_write_past_a_crm_version_we_have_not_seen_takes_that_version_first(
    session: AsyncSession, account: int
) -> None:
    """Plan's platform value won at +5; Kommo's contact is at +20 (Score edited) and that webhook is still on
    its way. With the write, our copy takes the live version with Plan's value kept: the late webhook (+20,
    Plan still "gold") is then not newer than our copy, and never puts "gold" back or pushes it."""
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    rows = await _writes(session, account)
    live = CrmContact(
        id=1,
        name="Ann",
        updated_at=KOMMO_AT + 20,
        emails=(EMAIL,),
        fields=(CrmFieldValue(PLAN, ("gold",)), CrmFieldValue(SCORE, ("13",))),
    )
    values = {(1, f"custom_field:{PLAN}"): "gold"}
    plan = plan_writes(rows, {1: KOMMO_AT + 20}, values)
    assert [w.contact_id for w in plan.writes] == [1]
    assert await _catch_up(session, account, {1: live}, [rows[0].id], utcnow())  # after the write
    data = await _data(session, account)
    assert (data["fields"][str(PLAN)], data["fields"][str(SCORE)]) == (["silver"], ["13"])
    times = await _times(session, account)
    assert times is not None
    assert (times[f"custom_field:{PLAN}"], times[f"custom_field:{SCORE}"]) == (KOMMO_AT + 5, KOMMO_AT + 20)
    row = await _outbox(session, account)
    assert (row.payload["fields"]["Plan"], row.payload["fields"]["Score"]) == ("silver", "13")
    await _version(session, account, KOMMO_AT + 20, plan="gold", score="13")  # the late webhook
    assert (await _data(session, account))["fields"][str(PLAN)] == ["silver"]
    assert (await _outbox(session, account)).payload["fields"]["Plan"] == "silver"


def _live(at: int, plan: str, score: str) -> CrmContact:
    return CrmContact(
        id=1,
        name="Ann",
        updated_at=KOMMO_AT + at,
        emails=(EMAIL,),
        fields=(CrmFieldValue(PLAN, (plan,)), CrmFieldValue(SCORE, (score,))),
    )


async def test_a_late_webhook_applied_during_the_write_is_undone_by_the_catch_up(
    session: AsyncSession, account: int
) -> None:
    """The other field's version (+20, Plan still "gold") reached us while our write of "silver" was in
    flight: our copy went back to "gold". After the write, the written value is put back with its time."""
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    [row] = await _writes(session, account)
    await _version(session, account, KOMMO_AT + 20, plan="gold", score="13")  # the late webhook, applied
    assert (await _data(session, account))["fields"][str(PLAN)] == ["gold"]
    assert await _catch_up(session, account, {1: _live(20, "gold", "13")}, [row.id], utcnow())
    assert (await _data(session, account))["fields"][str(PLAN)] == ["silver"]
    times = await _times(session, account)
    assert times is not None
    assert times[f"custom_field:{PLAN}"] == KOMMO_AT + 5
    assert (await _outbox(session, account)).payload["fields"]["Plan"] == "silver"


async def test_a_crm_edit_made_after_our_write_stands(session: AsyncSession, account: int) -> None:
    """Our write of "silver" went in (live before it: +20); a user then set "copper" in the CRM (+30) and that
    webhook reached us before the catch-up: it is later than our write, and stays."""
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    [row] = await _writes(session, account)
    await _version(session, account, KOMMO_AT + 30, plan="copper", score="13")
    assert not await _catch_up(session, account, {1: _live(20, "gold", "13")}, [row.id], utcnow())
    assert (await _data(session, account))["fields"][str(PLAN)] == ["copper"]


async def test_a_pending_value_a_crm_edit_replaced_is_not_put_back(
    session: AsyncSession, account: int
) -> None:
    """A platform value still pending, whose field the CRM changed since (to "platinum", seen): a catch-up
    of the contact for another write keeps the CRM's value."""
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    await _version(session, account, KOMMO_AT + 15, plan="platinum", score="12.5")
    assert await _catch_up(session, account, {1: _live(20, "platinum", "13")}, [], utcnow())
    data = await _data(session, account)
    assert (data["fields"][str(PLAN)], data["fields"][str(SCORE)]) == (["platinum"], ["13"])


def test_a_contact_changed_since_in_another_field_is_still_written() -> None:
    """The live version is newer than the platform's change, but the source's live value is still the one the
    platform's change won over: another field changed, and the write goes ahead."""
    held = _row(1, 7, "custom_field:5", "silver", 10)
    held.crm_before = "gold"
    moved = _row(2, 8, "custom_field:5", "silver", 10)
    moved.crm_before = "gold"
    unknown = _row(
        3, 9, "custom_field:5", "silver", 10
    )  # from before crm_before was kept: judged per contact
    live = {(7, "custom_field:5"): "gold", (8, "custom_field:5"): "platinum", (9, "custom_field:5"): "gold"}
    plan = plan_writes([held, moved, unknown], {7: KOMMO_AT + 20, 8: KOMMO_AT + 20, 9: KOMMO_AT + 20}, live)
    assert [(w.contact_id, w.fields) for w in plan.writes] == [(7, ((5, "silver"),))]
    assert sorted(plan.stale_ids) == [2, 3]


def test_a_second_platform_change_before_the_first_was_written_still_finds_the_crm_value() -> None:
    """Two platform changes of one field, neither written yet: the second recorded our copy (the first
    platform value) as what it won over, while the CRM still holds the value the first one won over."""
    first_change = _row(1, 7, "custom_field:5", "silver", 10)
    first_change.crm_before = "gold"
    second_change = _row(2, 7, "custom_field:5", "bronze", 12)
    second_change.crm_before = "silver"
    plan = plan_writes([first_change, second_change], {7: KOMMO_AT + 20}, {(7, "custom_field:5"): "gold"})
    assert [(w.contact_id, w.fields) for w in plan.writes] == [(7, ((5, "bronze"),))]
    assert plan.superseded == [1]
    assert not plan.stale_ids


def test_a_crm_edit_between_two_platform_changes_breaks_the_chain() -> None:
    """ "silver" won over "gold"; the CRM then set "platinum" (seen), "bronze" won over that; the CRM is live
    at "gold" again, at +20, after both: a CRM edit made after the platform's change, which must win."""
    first_change = _row(1, 7, "custom_field:5", "silver", 10)
    first_change.crm_before = "gold"
    second_change = _row(2, 7, "custom_field:5", "bronze", 12)
    second_change.crm_before = "platinum"
    plan = plan_writes([first_change, second_change], {7: KOMMO_AT + 20}, {(7, "custom_field:5"): "gold"})
    assert plan.writes == []
    assert sorted(plan.stale_ids) == [2]


def _owned_spec() -> StoredSpec:
    """SPEC with Plan turned ``to_kommo``: the platform owns it."""
    plan = SPEC.fields[0].model_copy(update={"direction": Direction.TO_KOMMO})
    return SPEC.model_copy(update={"fields": [plan, *SPEC.fields[1:]]})


async def test_a_field_the_platform_owns_is_never_pushed_and_its_change_always_wins(
    session: AsyncSession, account: int
) -> None:
    """``to_kommo``: a CRM edit of Plan is not pushed; a platform change older than that edit still wins
    (no conflict to judge), is recorded in ``platform_values`` and comes back as an echo; the CRM's webhook
    for our write pushes nothing."""
    await spec_repo.store_spec(session, account, _owned_spec())
    await _version(session, account, KOMMO_AT + 10, plan="bronze")
    assert (await _outbox(session, account)).status == OutboxStatus.DONE  # the CRM's "bronze" stays there
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    [write] = await _writes(session, account)
    assert (write.value, write.state) == ("silver", CrmWriteState.PENDING)
    row = await _outbox(session, account)
    assert row.pushed_payload is not None
    assert row.platform_values == {"Plan": {"v": "silver", "at": KOMMO_AT + 5}}
    assert "Plan" not in row.pushed_payload["fields"]  # one record of it: the latest
    assert row.status == OutboxStatus.DONE
    assert await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 60)) is Outcome.ECHO
    await _version(session, account, KOMMO_AT + 20, plan="silver")  # the CRM's webhook for our write
    assert (await _outbox(session, account)).status == OutboxStatus.DONE
    # A platform value the CRM holds already is not written again.
    await _version(session, account, KOMMO_AT + 80, plan="copper")
    assert (
        await two_way.apply_change(session, account, _change("copper", KOMMO_AT + 75)) is Outcome.ALREADY_HELD
    )
    assert len(await _writes(session, account)) == 1


async def test_the_platform_s_value_of_an_owned_field_outlives_a_push_queued_before_it(
    session: AsyncSession, account: int
) -> None:
    """A push of the address (Score edited in the CRM) is pending when the platform changes its own Plan: once
    that push is accepted, the record still says the platform holds its value, so a later change back to the
    old value is a change, not an echo."""
    await spec_repo.store_spec(session, account, _owned_spec())
    await _version(session, account, KOMMO_AT + 10, plan="gold", score="14")
    row = await _outbox(session, account)
    assert row.status == OutboxStatus.PENDING
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 20))
        is Outcome.PLATFORM_WINS
    )
    await outbox_repo.mark_pushed(session, [row.id], utcnow())  # the queued push is accepted
    row = await _outbox(session, account)
    assert row.status == OutboxStatus.DONE
    assert row.platform_values == {"Plan": {"v": "silver", "at": KOMMO_AT + 20}}
    assert await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 30)) is Outcome.ECHO
    assert (
        await two_way.apply_change(session, account, _change("gold", KOMMO_AT + 40)) is Outcome.PLATFORM_WINS
    )
    assert [w.value for w in await _writes(session, account)] == ["silver", "gold"]


async def test_a_rule_turned_back_to_both_is_recorded_in_the_push_record_again(
    session: AsyncSession, account: int
) -> None:
    await spec_repo.store_spec(session, account, _owned_spec())
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    await spec_repo.store_spec(session, account, SPEC)
    assert (
        await two_way.apply_change(session, account, _change("bronze", KOMMO_AT + 9)) is Outcome.PLATFORM_WINS
    )
    row = await _outbox(session, account)
    assert row.pushed_payload is not None
    assert (row.platform_values, row.pushed_payload["fields"]["Plan"]) == (None, "bronze")


def test_a_write_of_a_field_the_platform_owns_is_not_dropped_for_a_crm_change() -> None:
    """The CRM changed the contact, and this very field, after the platform's change: for a ``both`` field
    the CRM wins; for an owned one the platform's value is written all the same (unless the contact is gone).
    Owned is by target: the same source may feed a ``both`` target too."""
    row = _row(1, 7, "custom_field:5", "silver", 10)
    row.crm_before = "gold"
    gone = _row(2, 9, "custom_field:5", "silver", 10)
    live = {(7, "custom_field:5"): "platinum"}
    assert plan_writes([row, gone], {7: KOMMO_AT + 20}, live).writes == []
    assert plan_writes([row, gone], {7: KOMMO_AT + 20}, live, frozenset({"Other"})).writes == []
    plan = plan_writes([row, gone], {7: KOMMO_AT + 20}, live, frozenset({"T"}))
    assert [(w.contact_id, w.fields) for w in plan.writes] == [(7, ((5, "silver"),))]
    assert sorted(plan.stale_ids) == [2]


async def test_an_older_report_of_a_field_the_platform_owns_is_stale(
    session: AsyncSession, account: int
) -> None:
    """A late hook, or an export taken before a hook we applied: older than what the platform last told us."""
    await spec_repo.store_spec(session, account, _owned_spec())
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 50))
        is Outcome.PLATFORM_WINS
    )
    assert await two_way.apply_change(session, account, _change("bronze", KOMMO_AT + 40)) is Outcome.STALE
    assert [w.value for w in await _writes(session, account)] == ["silver"]
    assert (await _outbox(session, account)).platform_values == {"Plan": {"v": "silver", "at": KOMMO_AT + 50}}


async def test_a_value_pushed_before_the_rule_became_owned_survives_the_next_push(
    session: AsyncSession, account: int
) -> None:
    """Plan was pushed ("gold") under ``both``; the rule turns ``to_kommo``; the next push (Score edited) no
    longer carries Plan, and what the platform holds of it is still known: "gold" reported again is an echo."""
    await spec_repo.store_spec(session, account, _owned_spec())
    await _version(session, account, KOMMO_AT + 10, plan="gold", score="14")
    row = await _outbox(session, account)
    assert row.status == OutboxStatus.PENDING
    assert row.pushed_at is not None
    pushed_at = int(row.pushed_at.timestamp())  # when Unisender took "gold" from us
    assert row.platform_values == {"Plan": {"v": "gold", "at": pushed_at}}
    # A report of Plan older than that push is stale: the push overwrote it.
    assert await two_way.apply_change(session, account, _change("tin", pushed_at - 5)) is Outcome.STALE
    await outbox_repo.mark_pushed(session, [row.id], utcnow())
    row = await _outbox(session, account)
    assert row.pushed_payload is not None
    assert "Plan" not in row.pushed_payload["fields"]
    assert await two_way.apply_change(session, account, _change("gold", KOMMO_AT + 20)) is Outcome.ECHO
    pushed = await crm_writes_repo.pushed_before(session, account, [EMAIL], utcnow() + timedelta(seconds=1))
    assert pushed[EMAIL]["Plan"] == "gold"  # what the export reconcile compares with


async def test_an_accepted_deletion_ends_what_the_platform_held(session: AsyncSession, account: int) -> None:
    await spec_repo.store_spec(session, account, _owned_spec())
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    row = await _outbox(session, account)
    await outbox_repo.requeue(
        session, [outbox_repo.Requeue(row.id, {"delete": True}, "d")], utcnow(), bulk=False
    )
    await outbox_repo.mark_pushed(session, [row.id], utcnow())
    assert (await _outbox(session, account)).platform_values is None


async def test_the_export_reconcile_compares_with_the_pushed_phone_and_what_the_platform_owns(
    session: AsyncSession, account: int
) -> None:
    row = await _outbox(session, account)
    payload = {**row.payload, "phone": "+15550100"}
    await outbox_repo.requeue(session, [outbox_repo.Requeue(row.id, payload, "p")], utcnow(), bulk=False)
    await outbox_repo.mark_pushed(session, [row.id], utcnow())
    await spec_repo.store_spec(session, account, _owned_spec())
    assert (
        await two_way.apply_change(session, account, _change("silver", KOMMO_AT + 5)) is Outcome.PLATFORM_WINS
    )
    later = utcnow() + timedelta(seconds=1)
    held = (await crm_writes_repo.pushed_before(session, account, [EMAIL], later))[EMAIL]
    assert (held["phone"], held["Plan"], held["Score"]) == ("+15550100", "silver", "12.5")
    # What the preview compares with: the same record.
    _, state = (await outbox_repo.pushed_state(session, account, [EMAIL]))[EMAIL]
    assert state is not None
    assert state["kept"] == {"Plan": "silver"}
