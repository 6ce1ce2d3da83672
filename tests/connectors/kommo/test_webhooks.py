"""The Kommo webhook parser against recorded bodies, hostile input and random bracket keys."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.connectors.base import CrmAction, CrmFieldValue
from app.connectors.kommo.exceptions import KommoWebhookParseError
from app.connectors.kommo.webhooks import MAX_CONTACTS, MAX_DEPTH, MAX_KEYS, parse_webhook, split_key

FIXTURES = Path(__file__).parents[2] / "fixtures" / "kommo"


def load_pairs(name: str) -> list[tuple[str, str]]:
    """A recorded body, stored one ``key=value`` per line for readability."""
    pairs: list[tuple[str, str]] = []
    for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines():
        if line:
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def load_body(name: str) -> bytes:
    """The same body as Kommo puts it on the wire (urlencoded, brackets percent-encoded)."""
    return urlencode(load_pairs(name)).encode()


def test_spec_add_body_from_wire_bytes() -> None:
    batch = parse_webhook((FIXTURES / "contact_add.wire.txt").read_bytes())

    assert batch.account_id == 32720107
    assert batch.subdomain == "acme"
    assert len(batch.events) == 1
    event = batch.events[0]
    assert event.action is CrmAction.ADD
    assert event.contact_id == 17611273
    assert event.updated_at == 1726573127
    assert event.contact is not None
    assert event.contact.name == "Contact Name"
    assert event.contact.emails == ("john@example.com",)  # the phone value is not an email


def test_pairs_and_bytes_give_the_same_batch() -> None:
    assert parse_webhook(load_pairs("contact_update.txt")) == parse_webhook(load_body("contact_update.txt"))


def test_update_finds_email_after_radiobutton_and_date_fields() -> None:
    batch = parse_webhook(load_body("contact_update.txt"))

    [event] = batch.events
    assert event.action is CrmAction.UPDATE
    assert event.updated_at == 1726580000
    assert event.contact is not None
    assert event.contact.name == "Иван Петров"
    # EMAIL sits in custom_fields[3], after a radiobutton ({value, enum}) and a bare date value.
    assert event.contact.emails == ("ivan@example.com", "Ivan.Private@Example.org")


def test_delete_carries_only_the_id() -> None:
    batch = parse_webhook(load_body("contact_delete.txt"))

    assert batch.account_id == 32720107
    [event] = batch.events
    assert event.action is CrmAction.DELETE
    assert event.contact_id == 17611273
    assert event.updated_at is None
    assert event.contact is None


def test_restore_is_a_full_contact() -> None:
    [event] = parse_webhook(load_body("contact_restore.txt")).events

    assert event.action is CrmAction.RESTORE
    assert event.updated_at == 1726590000
    assert event.contact is not None
    assert event.contact.emails == ("john@example.com",)


def test_every_contact_and_every_action_of_one_body() -> None:
    batch = parse_webhook(load_body("multi_contact_multi_action.txt"))

    assert batch.account_id == 32720107  # account block last, as in the docs
    got = [(e.action, e.contact_id, e.contact.emails if e.contact else None) for e in batch.events]
    assert got == [
        (CrmAction.ADD, 101, ("anna@example.com",)),
        # add[1] is a company: skipped
        (CrmAction.ADD, 102, ()),
        (CrmAction.UPDATE, 103, ("clara@example.com", "clara.work@example.com")),
        (CrmAction.UPDATE, 104, ()),
        (CrmAction.DELETE, 105, None),
        (CrmAction.DELETE, 106, None),
        # note[0] ignored
        (CrmAction.RESTORE, 107, ("eva@example.com",)),
    ]


def test_current_delivery_layout_with_tags() -> None:
    """A body as current deliveries lay it out: the account block first (subdomain, id, _links.self), an
    always-present old_responsible_user_id, and tags as ``[tags][i][id]`` / ``[tags][i][name]``."""
    batch = parse_webhook(load_body("contact_update_tags.txt"))

    assert (batch.account_id, batch.subdomain) == (31254530, "etesttask")
    [event] = batch.events
    assert (event.action, event.contact_id, event.updated_at) == (CrmAction.UPDATE, 17611273, 1726590000)
    assert event.contact is not None
    assert event.contact.emails == ("john@example.com",)
    assert event.contact.tags == ("повторное обращение", "vip")


def test_bodies_the_kommo_sandbox_sends_parse_to_what_it_holds() -> None:
    """The sandbox's serializer (what our end-to-end tests receive) and the parser agree on every field we read."""
    from sandbox.kommo.serialize import account_pairs, form_encode, webhook_contact_pairs
    from sandbox.kommo.store import Account, Contact, Tag

    account = Account(31254530, "etesttask", "E", 1726000000, 0, 11087123)
    email = account.field_by_code("EMAIL")
    assert email is not None
    account.tags = {80147: Tag(80147, "повторное обращение"), 80148: Tag(80148, "vip")}
    contact = Contact(
        17611273,
        name="Tab\tand\x00NUL",
        first_name="",
        last_name="",
        responsible_user_id=11087123,
        created_by=11087123,
        updated_by=11087123,
        created_at=1726573127,
        updated_at=1726590000,
        fields=[(email.id, [("john@example.com", None)])],
        tags=[80147, 80148],
    )
    pairs = account_pairs(account, "amocrm.ru") + webhook_contact_pairs(account, "update", 0, contact)
    batch = parse_webhook(form_encode(pairs))

    assert (batch.account_id, batch.subdomain) == (31254530, "etesttask")
    [event] = batch.events
    assert event.contact is not None
    assert (event.contact.name, event.contact.updated_at) == ("Tab\tandNUL", 1726590000)
    assert event.contact.emails == ("john@example.com",)
    assert event.contact.tags == ("повторное обращение", "vip")


def test_control_characters_are_removed_from_every_value() -> None:
    """NUL (which PostgreSQL cannot store) and the other C0/C1 controls go; tab, LF and CR stay."""
    body = (
        "contacts[update][0][id]=5&contacts[update][0][updated_at]=100"
        "&contacts[update][0][name]=Mary%00%01%1F%7F%C2%80%C2%9F+Ann%09%0A%0D"
        "&contacts[update][0][first_name]=M%00"
        "&contacts[update][0][custom_fields][0][code]=EMAIL"
        "&contacts[update][0][custom_fields][0][values][0][value]=ma%00ry@example.com"
        "&contacts[update][0][tags][0][name]=v%00ip"
    )
    [event] = parse_webhook(body.encode()).events
    assert event.contact is not None
    assert event.contact.name == "Mary Ann\t\n\r"
    assert event.contact.first_name == "M"
    assert event.contact.emails == ("mary@example.com",)
    assert event.contact.tags == ("vip",)


def test_company_and_note_yield_no_events() -> None:
    batch = parse_webhook(load_body("company_and_note.txt"))

    assert batch.account_id == 32720107
    assert batch.events == []


def test_indices_are_ordered_numerically_not_by_arrival() -> None:
    pairs = [
        ("contacts[delete][10][id]", "3"),
        ("contacts[delete][2][id]", "2"),
        ("contacts[delete][0][id]", "1"),
    ]
    assert [e.contact_id for e in parse_webhook(pairs).events] == [1, 2, 3]


def test_uncoded_multitext_field_named_email_counts() -> None:
    pairs = [
        ("contacts[add][0][id]", "7"),
        ("contacts[add][0][updated_at]", "100"),
        ("contacts[add][0][custom_fields][0][id]", "900"),
        ("contacts[add][0][custom_fields][0][name]", "Email"),
        ("contacts[add][0][custom_fields][0][values][0][value]", "user@example.com"),
        ("contacts[add][0][custom_fields][0][values][0][enum]", "552488"),
        ("contacts[add][0][custom_fields][1][id]", "901"),
        ("contacts[add][0][custom_fields][1][name]", "Notes"),
        ("contacts[add][0][custom_fields][1][values][0][value]", "not-an-email-field@example.com"),
    ]
    [event] = parse_webhook(pairs).events
    assert event.contact is not None
    assert event.contact.emails == ("user@example.com",)


def test_uncoded_text_field_named_email_is_not_an_address_field() -> None:
    """REST takes an uncoded field named "Email" for addresses only when it is a multitext field; a text field
    of that name (values without ``[enum]``) must not give the contact an address by webhook that the next
    full sync would take away again."""
    pairs = [
        ("contacts[add][0][id]", "7"),
        ("contacts[add][0][updated_at]", "100"),
        ("contacts[add][0][custom_fields][0][id]", "900"),
        ("contacts[add][0][custom_fields][0][name]", "Email"),
        ("contacts[add][0][custom_fields][0][values][0][value]", "typed@example.com"),
    ]
    [event] = parse_webhook(pairs).events
    assert event.contact is not None
    assert event.contact.emails == ()
    assert event.contact.fields == (CrmFieldValue(900, ("typed@example.com",)),)
    # Nor a radiobutton's single option object, which REST would not take either.
    radio = [
        ("contacts[add][0][id]", "7"),
        ("contacts[add][0][custom_fields][0][id]", "901"),
        ("contacts[add][0][custom_fields][0][name]", "Email"),
        ("contacts[add][0][custom_fields][0][values][value]", "picked@example.com"),
        ("contacts[add][0][custom_fields][0][values][enum]", "566642"),
    ]
    [event] = parse_webhook(radio).events
    assert event.contact is not None
    assert event.contact.emails == ()


def test_missing_timestamp_is_none_not_an_error() -> None:
    [event] = parse_webhook([("contacts[update][0][id]", "5"), ("contacts[update][0][name]", "X")]).events
    assert event.updated_at is None
    assert event.contact is not None
    assert event.contact.updated_at == 0


def test_empty_body_is_an_empty_batch() -> None:
    batch = parse_webhook(b"")
    assert (batch.account_id, batch.subdomain, batch.events) == (None, None, [])


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ([("contacts[add][0][id]", "abc")], "not a non-negative integer"),
        ([("contacts[add][0][id]", "-5")], "not a non-negative integer"),
        ([("contacts[add][0][id]", "1e3")], "not a non-negative integer"),
        ([("contacts[add][0][id]", "99999999999999999999")], "not a non-negative integer"),
        ([("contacts[add][0][name]", "no id")], "has no id"),
        ([("contacts[add][x][id]", "1")], "index is not a number"),
        ([("contacts[add][01][id]", "1")], "index is not a number"),
        ([("contacts[add][0][id]", "1"), ("contacts[add][0][id][x]", "2")], "both as a value and as a group"),
        ([("contacts[add][0][id][x]", "2"), ("contacts[add][0][id]", "1")], "both as a value and as a group"),
        ([("contacts[add][0][id]", "1"), ("contacts[add][0][id]", "2")], "duplicate key"),
        ([("contacts", "x")], "must be a group"),
        ([("contacts[add]", "x")], "must be a group"),
        ([("contacts[add][0]", "x")], "must be a group"),
        ([("contacts[add][0][id", "1")], "unclosed bracket"),
        ([("contacts[add]x[0]", "1")], "text between brackets"),
        ([("contacts[add][][id]", "1")], "empty or nested"),
        ([("contacts[a[dd]][0]", "1")], "empty or nested"),
        ([("[add][0][id]", "1")], "bad key root"),
        ([("contacts]", "1")], "bad key root"),
        ([("account[id]", "acme")], "not a non-negative integer"),
        ([("contacts[update][0][id]", "5"), ("contacts[update][0][updated_at]", "soon")], "non-negative"),
    ],
)
def test_malformed_bodies_raise_a_parse_error(pairs: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(KommoWebhookParseError, match=reason):
        parse_webhook(pairs)


def test_limits_on_keys_depth_and_contacts() -> None:
    too_many_keys = "&".join(f"k{i}=1" for i in range(MAX_KEYS + 1)).encode()
    with pytest.raises(KommoWebhookParseError, match="too many fields"):
        parse_webhook(too_many_keys)
    with pytest.raises(KommoWebhookParseError, match="too many fields"):
        parse_webhook((f"k{i}", "1") for i in range(MAX_KEYS + 1))

    deep = "a" + "[x]" * (MAX_DEPTH + 1)
    with pytest.raises(KommoWebhookParseError, match="too deep"):
        parse_webhook([(deep, "1")])
    assert split_key("a" + "[x]" * MAX_DEPTH) == ["a"] + ["x"] * MAX_DEPTH

    many = [(f"contacts[delete][{i}][id]", str(i + 1)) for i in range(MAX_CONTACTS + 1)]
    with pytest.raises(KommoWebhookParseError, match="too many contacts"):
        parse_webhook(many)
    assert len(parse_webhook(many[:MAX_CONTACTS]).events) == MAX_CONTACTS


def test_hostile_depth_does_not_recurse() -> None:
    # 100k nested brackets: rejected by the depth cap with a parse error, never a RecursionError.
    with pytest.raises(KommoWebhookParseError):
        parse_webhook(("a" + "[x]" * 100_000 + "=1").encode())


def test_undecodable_bytes_are_a_parse_error() -> None:
    with pytest.raises(KommoWebhookParseError, match="UTF-8"):
        parse_webhook(b"contacts[add][0][name]=\xff")
    with pytest.raises(KommoWebhookParseError, match="UTF-8"):
        parse_webhook(b"contacts[add][0][name]=%FF%FE")


# --- properties ---------------------------------------------------------------------------------------------

_segment = st.one_of(
    st.sampled_from(
        [
            "contacts",
            "account",
            "add",
            "update",
            "delete",
            "restore",
            "note",
            "id",
            "type",
            "custom_fields",
            "values",
            "value",
            "enum",
            "code",
            "name",
            "updated_at",
            "tags",
            "0",
            "1",
        ]
    ),
    st.text(alphabet="0123456789", min_size=1, max_size=3),
    st.text(min_size=0, max_size=6),
)
_key = st.builds(
    lambda root, segs, junk: root + "".join(f"[{s}]" for s in segs) + junk,
    st.sampled_from(["contacts", "account", "x", "", "contacts]"]),
    st.lists(_segment, max_size=12),
    st.sampled_from(["", "", "", "[", "]", "[]", "x"]),
)
_value = st.one_of(
    st.sampled_from(["", "0", "1", "17611273", "contact", "company", "EMAIL", "a@b.c", "-1", "abc"]),
    st.text(max_size=10),
)


@settings(max_examples=250, deadline=None)
@given(st.lists(st.tuples(_key, _value), max_size=40))
def test_random_bracket_pairs_only_ever_raise_parse_errors(pairs: list[tuple[str, str]]) -> None:
    try:
        batch = parse_webhook(pairs)
    except KommoWebhookParseError:
        return
    for event in batch.events:
        assert event.contact_id > 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_parse_errors(body: bytes) -> None:
    with contextlib.suppress(KommoWebhookParseError):
        parse_webhook(body)


_email = st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.(com|org)", fullmatch=True)
_contact = st.fixed_dictionaries(
    {
        "id": st.integers(min_value=1, max_value=2**40),
        "updated_at": st.integers(min_value=0, max_value=2**31),
        "emails": st.lists(_email, max_size=3, unique=True),
        "email_at": st.integers(min_value=0, max_value=2),
        "action": st.sampled_from(["add", "update", "restore", "delete"]),
    }
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_contact, max_size=8))
def test_generated_bodies_round_trip(contacts: list[dict[str, object]]) -> None:
    pairs: list[tuple[str, str]] = [("account[id]", "42")]
    counters: dict[str, int] = {}
    expected: dict[str, list[tuple[int, tuple[str, ...] | None]]] = {}
    for c in contacts:
        action = str(c["action"])
        i = counters.get(action, 0)
        counters[action] = i + 1
        base = f"contacts[{action}][{i}]"
        pairs += [(f"{base}[id]", str(c["id"])), (f"{base}[type]", "contact")]
        emails = tuple(str(e) for e in c["emails"])  # type: ignore[attr-defined]
        if action == "delete":
            expected.setdefault(action, []).append((int(str(c["id"])), None))
            continue
        pairs.append((f"{base}[updated_at]", str(c["updated_at"])))
        email_at = int(str(c["email_at"]))
        for f in range(email_at):  # filler fields before EMAIL
            pairs += [
                (f"{base}[custom_fields][{f}][id]", str(f)),
                (f"{base}[custom_fields][{f}][code]", "PHONE"),
                (f"{base}[custom_fields][{f}][values][0][value]", "+100"),
            ]
        if emails:
            pairs.append((f"{base}[custom_fields][{email_at}][code]", "EMAIL"))
            for v, e in enumerate(emails):
                pairs.append((f"{base}[custom_fields][{email_at}][values][{v}][value]", e))
        expected.setdefault(action, []).append((int(str(c["id"])), emails))

    batch = parse_webhook(urlencode(pairs).encode())

    got: dict[str, list[tuple[int, tuple[str, ...] | None]]] = {}
    for event in batch.events:
        got.setdefault(event.action.value, []).append(
            (event.contact_id, event.contact.emails if event.contact else None)
        )
    assert batch.account_id == 42
    assert got == expected


# The form decoder and key splitter are hand-written for speed: they must agree with the slow, obvious versions.

_FORM_TEXT = st.text(alphabet=st.sampled_from(list("ab[]=&+%20AFzé0")), max_size=60)


@given(_FORM_TEXT)
@settings(max_examples=400, deadline=None)
def test_form_decoder_matches_parse_qsl(text: str) -> None:
    from urllib.parse import parse_qsl

    from app.connectors.kommo.webhooks import _decode

    try:
        expected: list[tuple[str, str]] | None = parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        expected = None
    if expected is None:
        with pytest.raises(KommoWebhookParseError):
            _decode(text)
    else:
        assert _decode(text) == expected


def _split_key_slowly(key: str) -> list[str] | None:
    root, bracket, rest = key.partition("[")
    if not root or "]" in root:
        return None
    segments = [root]
    if not bracket:
        return segments
    rest = "[" + rest
    while rest:
        if not rest.startswith("["):
            return None
        close = rest.find("]")
        if close < 0:
            return None
        segment = rest[1:close]
        if not segment or "[" in segment:
            return None
        segments.append(segment)
        rest = rest[close + 1 :]
    return segments


@given(st.text(alphabet=st.sampled_from(list("ab[]0")), min_size=1, max_size=30))
@settings(max_examples=400, deadline=None)
def test_split_key_matches_the_obvious_reading(key: str) -> None:
    expected = _split_key_slowly(key)
    if expected is None or len(expected) - 1 > MAX_DEPTH:
        with pytest.raises(KommoWebhookParseError):
            split_key(key)
    else:
        assert split_key(key) == expected
