"""Parse Kommo's form-encoded contact webhooks (PHP bracket keys) into a ``CrmWebhookBatch``.

Kommo posts ``application/x-www-form-urlencoded`` bodies such as
``contacts[add][0][custom_fields][1][values][0][value]=john@example.com``. The body comes from the internet
unsigned, so the parser is strict and bounded: every key is checked, the number of keys, the key depth and
the number of contacts are capped, the tree is built with loops (no recursion), and anything malformed raises
``KommoWebhookParseError`` (the API answers 400, never 500). Every value is cleaned of control characters
(``text.clean_text``) as the tree is built, so nothing downstream sees a NUL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TypeAlias
from urllib.parse import unquote

import structlog

from app.connectors.base import (
    CrmAction,
    CrmContact,
    CrmContactEvent,
    CrmFieldValue,
    CrmWebhookBatch,
)
from app.connectors.kommo.exceptions import KommoWebhookParseError
from app.connectors.kommo.values import date_text
from app.connectors.text import clean_text

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_KEYS = 10_000
MAX_DEPTH = 10  # segments after the root; the deepest real key has 7
MAX_KEY_LENGTH = 512
MAX_VALUE_LENGTH = 64 * 1024
MAX_CONTACTS = 1_000

_ACTIONS: dict[str, CrmAction] = {action.value: action for action in CrmAction}
_INT_RE = re.compile(r"[0-9]{1,19}")
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,5}")  # list positions: no signs, no leading zeros
_MAX_ID = 2**63 - 1
# A well-formed key: a root without brackets, then [segment]s without brackets inside.
_KEY_RE = re.compile(r"[^\[\]]+(?:\[[^\[\]]+\])*")

# A node of the parsed tree: a leaf string or a dict of child segments.
Node: TypeAlias = dict[str, "Node"] | str


def _fail(reason: str, **context: object) -> KommoWebhookParseError:
    log.info("kommo.webhook_rejected", reason=reason, **context)
    return KommoWebhookParseError(f"malformed Kommo webhook body: {reason}", code="webhook_parse")


def split_key(key: str) -> list[str]:
    """``a[b][0]`` → ``["a", "b", "0"]``; raise unless the key is ``root`` followed by ``[segment]``s."""
    if len(key) > MAX_KEY_LENGTH:
        raise _fail("key too long", length=len(key))
    if _KEY_RE.fullmatch(key):
        # The common case in one regex; the loop below only runs to say what is wrong with a bad key.
        open_at = key.find("[")
        if open_at < 0:
            return [key]
        segments = [key[:open_at], *key[open_at + 1 : -1].split("][")]
        if len(segments) - 1 > MAX_DEPTH:
            raise _fail("key too deep", key=key[:80])
        return segments
    open_at = key.find("[")
    root = key if open_at < 0 else key[:open_at]
    if not root or "]" in root:
        raise _fail("bad key root", key=key[:80])
    segments = [root]
    pos = open_at
    while 0 <= pos < len(key):
        if key[pos] != "[":
            raise _fail("text between brackets", key=key[:80])
        close = key.find("]", pos + 1)
        if close < 0:
            raise _fail("unclosed bracket", key=key[:80])
        segment = key[pos + 1 : close]
        if not segment or "[" in segment:
            raise _fail("empty or nested bracket segment", key=key[:80])
        segments.append(segment)
        if len(segments) - 1 > MAX_DEPTH:
            raise _fail("key too deep", key=key[:80])
        pos = close + 1
    return segments


def _decode(body: bytes | str) -> list[tuple[str, str]]:
    if isinstance(body, bytes):
        if len(body) > MAX_BODY_BYTES:
            raise _fail("body too large", size=len(body))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("body is not UTF-8") from None
    else:
        text = body
    # What urllib's parse_qsl(keep_blank_values=True) returns, written out because it is the hottest code of
    # webhook intake: Kommo's keys repeat from body to body, so their decoding is cached.
    if text.count("&") >= MAX_KEYS:
        raise _fail("too many fields", limit=MAX_KEYS)
    pairs: list[tuple[str, str]] = []
    try:
        for field in text.split("&"):
            if not field:
                continue
            name, _, value = field.partition("=")
            key = _unquote_key(name) if len(name) <= _CACHED_KEY_LENGTH else _unquote_plus(name)
            pairs.append((key, _unquote_plus(value)))
    except UnicodeDecodeError:
        raise _fail("percent-encoded bytes are not UTF-8") from None
    return pairs


def _unquote_plus(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    return unquote(text, encoding="utf-8", errors="strict") if "%" in text else text


_CACHED_KEY_LENGTH = 3 * MAX_KEY_LENGTH  # fully percent-encoded; longer keys are refused anyway


@lru_cache(maxsize=4096)
def _unquote_key(text: str) -> str:
    return _unquote_plus(text)


def build_tree(pairs: Iterable[tuple[str, str]]) -> dict[str, Node]:
    """Fold bracket keys into a nested dict of cleaned values; a path may not be both a leaf and a branch, nor
    repeat."""
    root: dict[str, Node] = {}
    for count, (key, value) in enumerate(pairs, start=1):
        if count > MAX_KEYS:
            raise _fail("too many fields", limit=MAX_KEYS)
        if not isinstance(key, str) or not isinstance(value, str):
            raise _fail("keys and values must be strings")
        if len(value) > MAX_VALUE_LENGTH:
            raise _fail("value too long", key=key[:80])
        segments = split_key(key)
        node = root
        for segment in segments[:-1]:
            child = node.get(segment)
            if child is None:
                child = {}
                node[segment] = child
            elif isinstance(child, str):
                raise _fail("key used both as a value and as a group", key=key[:80])
            node = child
        last = segments[-1]
        if last in node:
            existing = node[last]
            raise _fail(
                "duplicate key" if isinstance(existing, str) else "key used both as a value and as a group",
                key=key[:80],
            )
        node[last] = clean_text(value)
    return root


# --- reading the tree ---------------------------------------------------------------------------------------


def _group(node: Node | None, what: str) -> dict[str, Node] | None:
    if node is None:
        return None
    if isinstance(node, str):
        raise _fail(f"{what} must be a group, not a value")
    return node


def _leaf(node: dict[str, Node], name: str, what: str) -> str | None:
    value = node.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(f"{what}[{name}] must be a value, not a group")
    return value


def _int(value: str, what: str) -> int:
    if not _INT_RE.fullmatch(value) or int(value) > _MAX_ID:
        raise _fail(f"{what} is not a non-negative integer", value=value[:40])
    return int(value)


def _optional_int(node: dict[str, Node], name: str, what: str) -> int | None:
    value = _leaf(node, name, what)
    if value is None or value == "":
        return None
    return _int(value, f"{what}[{name}]")


def _indexed(group: dict[str, Node], what: str) -> list[tuple[int, Node]]:
    """Children of a list-like group (``[0]``, ``[1]``…), in index order."""
    items: list[tuple[int, Node]] = []
    for index, child in group.items():
        if not _INDEX_RE.fullmatch(index):
            raise _fail(f"{what} index is not a number", index=index[:40])
        items.append((int(index), child))
    items.sort(key=lambda item: item[0])
    return items


def _value_items(values: Node | None) -> list[Node]:
    """The items of a custom field's ``[values]`` in index order. The layouts of spec §8.2: a list of
    ``{value, enum}`` (text, select, multiselect, multitext, smart_address), one ``{value, enum}`` object
    (radiobutton), a list of bare values (date, date_time, birthday) or one bare value."""
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    if values and all(_INDEX_RE.fullmatch(key) for key in values):
        return [item for _, item in _indexed(values, "values")]
    return [values]


def _value_texts(items: list[Node]) -> list[str]:
    """Value texts of a custom field (``values.py``), in index order, blanks dropped. An option's text is its
    ``[value]``; ``[enum]`` is only its id. A ``[value]`` is kept as written, ``15.06.2016`` included: the form
    does not say the field's type, and a text field holding a typed date must reach the platform as the same
    text whether REST or a webhook read it last (Kommo's old birthday layout carried that form too: the events
    job, which knows from the sync spec which fields are dates, stores those as unix seconds). A group where a value belongs (a layout Kommo has not
    documented, such as legal_entity's object) is skipped rather than refused, so such a field cannot cost us
    the whole delivery."""
    texts: list[str] = []
    for item in items:
        if isinstance(item, str):
            text = date_text(item)  # bare values are dates: a unix int, or an RFC 3339 string
        else:
            value = item.get("value")
            if not isinstance(value, str):
                continue
            text = value
        if text.strip():
            texts.append(text)
    return texts


def _options(values: Node | None, items: list[Node]) -> bool:
    """Whether the values are a list of options (``[N][value]`` with ``[N][enum]``), as multitext values are:
    the one trace of a field's type a webhook shows. Select, multiselect and smart_address values look the
    same (a radiobutton's single object does not), so an uncoded select named "Email" whose options are
    addresses still counts here though REST skips it; a field like that is not known to exist."""
    listed = isinstance(values, dict) and bool(values) and all(_INDEX_RE.fullmatch(key) for key in values)
    return listed and all(isinstance(item, dict) and "enum" in item for item in items)


def _soft_int(node: dict[str, Node], name: str) -> int | None:
    """An optional integer attribute we only report (responsible user, creation time): unreadable is unknown,
    not a reason to refuse a delivery whose contact changes we need."""
    value = node.get(name)
    if isinstance(value, str) and _INT_RE.fullmatch(value) and int(value) <= _MAX_ID:
        return int(value)
    return None


def _custom_fields(contact: dict[str, Node], what: str) -> tuple[list[str], list[CrmFieldValue]]:
    """The contact's email addresses (as ``KommoContact.emails``) and every custom field with a value, in
    index order; a field without a readable ``[id]`` cannot be named and only counts for the emails."""
    fields = _group(contact.get("custom_fields"), f"{what}[custom_fields]")
    if not fields:
        return [], []
    emails: list[str] = []
    found: list[CrmFieldValue] = []
    for index, field in _indexed(fields, f"{what}[custom_fields]"):
        field_what = f"{what}[custom_fields][{index}]"
        if isinstance(field, str):
            raise _fail(f"{field_what} must be a group")
        code = _leaf(field, "code", field_what)
        name = _leaf(field, "name", field_what)
        items = _value_items(field.get("values"))
        texts = _value_texts(items)
        # User-created fields carry no [code]; an uncoded field named "Email" counts when it is a multitext
        # one, as in the REST mapping. The form has no type: its values being options ({value, enum}) is what
        # tells a multitext field from a text field of that name, whose values REST never takes for addresses.
        if code:
            is_email = code.upper() == "EMAIL"
        else:
            is_email = (name or "").strip().casefold() == "email" and _options(field.get("values"), items)
        if is_email:
            for value in texts:
                email = value.strip()
                if email not in emails:
                    emails.append(email)
        field_id = _soft_int(field, "id")
        if field_id is not None and texts:
            found.append(CrmFieldValue(field_id, tuple(texts)))
    return emails, found


def _tags(contact: dict[str, Node], what: str) -> list[str]:
    tags = _group(contact.get("tags"), f"{what}[tags]")
    if not tags:
        return []
    names: list[str] = []
    for _, tag in _indexed(tags, f"{what}[tags]"):
        if isinstance(tag, str):
            continue
        name = _leaf(tag, "name", f"{what}[tags]")
        if name:
            names.append(name)
    return names


def _event(action: CrmAction, contact: dict[str, Node], what: str) -> CrmContactEvent | None:
    kind = _leaf(contact, "type", what)
    if kind not in (None, "contact"):
        return None  # companies share the contacts[...] key (type=company); not ours
    raw_id = _leaf(contact, "id", what)
    if raw_id is None:
        raise _fail(f"{what} has no id")
    contact_id = _int(raw_id, f"{what}[id]")
    if contact_id == 0:
        raise _fail(f"{what}[id] is zero")
    if action is CrmAction.DELETE:
        return CrmContactEvent(action=action, contact_id=contact_id, updated_at=None, contact=None)
    updated_at = _optional_int(contact, "updated_at", what)
    if updated_at is None:
        updated_at = _optional_int(contact, "last_modified", what)
    emails, fields = _custom_fields(contact, what)
    created_at = _soft_int(contact, "created_at")
    crm_contact = CrmContact(
        id=contact_id,
        name=_leaf(contact, "name", what) or "",
        # Without a timestamp the contact cannot win an ordering check: 0 makes it the oldest version.
        updated_at=updated_at if updated_at is not None else 0,
        emails=tuple(emails),
        # Kommo's webhooks carry no first and last name (its documented bodies and the captures have
        # none): None keeps the ones read by REST, unless a body does carry them.
        first_name=_leaf(contact, "first_name", what),
        last_name=_leaf(contact, "last_name", what),
        tags=tuple(_tags(contact, what)),
        responsible_user_id=_soft_int(contact, "responsible_user_id"),
        created_at=created_at if created_at is not None else _soft_int(contact, "date_create"),
        fields=tuple(fields),
    )
    return CrmContactEvent(action=action, contact_id=contact_id, updated_at=updated_at, contact=crm_contact)


def parse_webhook(body: bytes | str | Iterable[tuple[str, str]]) -> CrmWebhookBatch:
    """Every contact event (add, update, delete, restore) of a Kommo webhook body, in body order per action.

    ``body`` is the raw request body or already-decoded ``(key, value)`` pairs. Notes, companies and other
    entities are ignored. Raises ``KommoWebhookParseError`` on malformed or oversized input.
    """
    pairs = _decode(body) if isinstance(body, bytes | str) else body
    tree = build_tree(pairs)

    account_id: int | None = None
    subdomain: str | None = None
    account_link: str | None = None
    account = _group(tree.get("account"), "account")
    if account is not None:
        account_id = _optional_int(account, "id", "account")
        subdomain = _leaf(account, "subdomain", "account") or None
        links = _group(account.get("_links"), "account[_links]")
        if links is not None:
            account_link = _leaf(links, "self", "account[_links]") or None

    events: list[CrmContactEvent] = []
    contacts = _group(tree.get("contacts"), "contacts")
    seen = 0
    for action_name, group in (contacts or {}).items():
        action = _ACTIONS.get(action_name)
        if action is None:
            continue  # note, responsible, … carry no contact state we mirror
        what = f"contacts[{action_name}]"
        items = _group(group, what)
        for index, item in _indexed(items or {}, what):
            seen += 1
            if seen > MAX_CONTACTS:
                raise _fail("too many contacts", limit=MAX_CONTACTS)
            item_what = f"{what}[{index}]"
            if isinstance(item, str):
                raise _fail(f"{item_what} must be a group")
            event = _event(action, item, item_what)
            if event is not None:
                events.append(event)
    return CrmWebhookBatch(
        account_id=account_id, subdomain=subdomain, events=events, account_link=account_link
    )
