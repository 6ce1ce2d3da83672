"""Newsletter signups: the pure rules (``app.sync.signup_rules``: which lists count, which tags and values a new
contact gets, which state a signup starts in) and their recording from hook events (``signups.record_signups``)
on the real database, each test inside a rolled-back transaction."""

from __future__ import annotations

import itertools
import random

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectors.base import CrmContact, CrmFieldValue
from app.db.models import Signup
from app.db.states import SignupState
from app.sync import service, signup_rules, spec_repo
from app.sync.signups import record_signups
from app.sync.spec import FieldRule, ListRule, SourceKind, SourceRef, StoredSpec

BASE, NEWS, PROMO, VIP, OTHER = 100, 200, 300, 400, 999
_IDS = itertools.count(random.randrange(10**12, 10**13, 10**6))


def _spec(*, create_contacts: bool = True) -> StoredSpec:
    return StoredSpec(
        lists=[
            ListRule(base=True, all=True),
            ListRule(list_id=NEWS, tag="newsletter"),
            ListRule(list_id=PROMO, tags_any=["promo", "deals"]),
            ListRule(list_id=VIP, tag="Newsletter"),  # the same tag as NEWS but for case: one tag
        ],
        create_contacts=create_contacts,
    )


def _rule(kind: SourceKind, target: str, *, type_: str = "text", field_id: int | None = None) -> FieldRule:
    ref = SourceRef(kind=kind, field_id=field_id, type=type_, name=target)
    return FieldRule(source=[kind.value], target=target, sources=[ref], target_type="string")


# --- the pure rules -------------------------------------------------------------------------------------------


def test_a_list_gives_its_tag_the_first_of_its_tags_any_or_none_when_mapped_with_all() -> None:
    spec = _spec()
    tags = [signup_rules.list_tag(r) for r in spec.lists]
    assert tags == [None, "newsletter", "promo", "Newsletter"]


def test_the_base_rule_maps_the_accounts_own_list_and_unmapped_lists_do_not_count() -> None:
    spec = _spec()
    assert signup_rules.mapped_lists(spec, [OTHER, BASE, NEWS, NEWS], BASE) == [BASE, NEWS]
    assert signup_rules.mapped_lists(spec, [BASE], None) == []  # no base list known: nothing maps it
    assert signup_rules.signup_tags(spec, [BASE, PROMO, NEWS, VIP, OTHER], BASE) == ["promo", "newsletter"]
    assert signup_rules.signup_tags(spec, [BASE], BASE) == []


def test_a_signup_is_linked_when_held_else_pending_or_recorded_by_the_spec() -> None:
    assert signup_rules.first_state(owned=True, create_contacts=True) is SignupState.LINKED
    assert signup_rules.first_state(owned=True, create_contacts=False) is SignupState.LINKED
    assert signup_rules.first_state(owned=False, create_contacts=True) is SignupState.PENDING
    assert signup_rules.first_state(owned=False, create_contacts=False) is SignupState.RECORDED


def test_only_a_list_adding_a_tag_the_contact_lacks_needs_tags() -> None:
    spec = _spec()
    assert signup_rules.needs_tags(spec, [NEWS], [NEWS, PROMO], BASE)
    assert not signup_rules.needs_tags(spec, [NEWS], [NEWS, VIP], BASE)  # "Newsletter": it has it
    assert not signup_rules.needs_tags(spec, [NEWS], [NEWS, BASE], BASE)  # all: no tag
    assert signup_rules.joined([NEWS, BASE], [PROMO, NEWS]) == [NEWS, BASE, PROMO]


def test_the_new_contact_takes_the_platforms_values_of_the_fields_its_spec_maps() -> None:
    spec = StoredSpec(
        fields=[
            _rule(SourceKind.NAME, "Name"),
            _rule(SourceKind.FIRST_NAME, "first"),
            _rule(SourceKind.CUSTOM_FIELD, "city", field_id=10),
            _rule(SourceKind.CUSTOM_FIELD, "level", type_="select", field_id=11),  # an option: not taken
            _rule(SourceKind.CUSTOM_FIELD, "empty", field_id=12),
            _rule(SourceKind.TAGS, "tags"),  # derived by us, not stored in the contact
        ]
    )
    held = {"Name": " Ann Lee ", "first": "Ann", "city": "Oslo", "level": "Gold", "empty": "", "tags": "x"}
    values = signup_rules.contact_values(spec, held)
    assert values == signup_rules.ContactValues(
        name="Ann Lee", first_name="Ann", last_name="", fields=(CrmFieldValue(10, ("Oslo",)),)
    )
    assert signup_rules.contact_values(spec, {}) == signup_rules.ContactValues()


# --- recording hook events ------------------------------------------------------------------------------------


@pytest.fixture
async def account(session: AsyncSession) -> int:
    """A connected account (no Unisender list: the spec names its lists by id) no other test uses."""
    account_id = next(_IDS)
    await session.execute(
        text(
            "INSERT INTO integration (account_id, subdomain, client_id, client_secret, redirect_uri,"
            " webhook_token_hash, status, created_at, updated_at) VALUES (:a, 'acme', 'c', 'x', 'http://x',"
            " 'h', 'connected', now(), now())"
        ),
        {"a": account_id},
    )
    return account_id


async def _rows(session: AsyncSession, account: int) -> dict[str, tuple[str, list[int], int | None]]:
    stmt = select(Signup).where(Signup.account_id == account).execution_options(populate_existing=True)
    rows = (await session.execute(stmt)).scalars()
    return {r.email: (r.state.value, list(r.list_ids), r.kommo_id) for r in rows}


async def test_one_row_per_address_whatever_the_deliveries(session: AsyncSession, account: int) -> None:
    await spec_repo.store_spec(session, account, _spec())
    events = [("ann@x.io", (NEWS,)), ("bob@x.io", (OTHER,)), ("ann@x.io", (NEWS,)), ("ann@x.io", (PROMO,))]
    assert await record_signups(session, account, events)
    assert await _rows(session, account) == {"ann@x.io": ("pending", [NEWS, PROMO], None)}
    # The same deliveries again: nothing new, and no job is due for them.
    assert not await record_signups(session, account, events)
    assert await _rows(session, account) == {"ann@x.io": ("pending", [NEWS, PROMO], None)}


async def test_a_held_address_is_linked_and_without_create_contacts_recorded(
    session: AsyncSession, account: int
) -> None:
    await spec_repo.store_spec(session, account, _spec(create_contacts=False))
    await service.apply_contacts(
        session, account, [CrmContact(id=7, name="Cid", updated_at=1, emails=("CID@x.io",))]
    )
    due = await record_signups(session, account, [("cid@x.io", (NEWS,)), ("dan@x.io", (NEWS,))])
    assert not due
    assert await _rows(session, account) == {
        "cid@x.io": ("linked", [NEWS], 7),
        "dan@x.io": ("recorded", [NEWS], None),
    }


async def test_a_created_contact_joining_a_list_with_a_new_tag_goes_back_for_it(
    session: AsyncSession, account: int
) -> None:
    await spec_repo.store_spec(session, account, _spec())
    await record_signups(session, account, [("eve@x.io", (NEWS,))])
    row = (await session.execute(select(Signup).where(Signup.account_id == account))).scalar_one()
    row.state, row.kommo_id = SignupState.CREATED, 55
    await session.flush()

    assert not await record_signups(session, account, [("eve@x.io", (VIP,))])  # "Newsletter": it has it
    assert await _rows(session, account) == {"eve@x.io": ("created", [NEWS, VIP], 55)}
    assert await record_signups(session, account, [("eve@x.io", (PROMO,))])
    assert await _rows(session, account) == {"eve@x.io": ("pending", [NEWS, VIP, PROMO], 55)}
