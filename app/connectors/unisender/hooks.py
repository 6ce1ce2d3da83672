"""Unisender event-hook deliveries: check ``auth`` and read every layout Unisender posts into one event model.

Layouts (examples in tests/fixtures/unisender/):

- batched (``single_event=0``)::

    {"auth": "<md5>", "events_by_user": [{"login": "acme", "events": [
      {"event_name": "email_status", "event_time": "2017-06-19 10:38:22",
       "event_data": {"email": "a@example.org", "status": "ok_delivered", ...}}]}]}

  Unisender Go's flavour names the account with ``user_id``/``project_id`` instead of ``login`` and puts
  ``event_time`` inside ``event_data``.
- flat (``single_event=1``): one event per request, ``event_name``, ``event_time`` and the event's fields
  (``email``, ``list_id``, ``status``…) at the top level.

A redelivery carries a top-level ``retry_count``. ``auth`` is the md5 hex of the raw body in which the auth
value is replaced by the account's API key.

Reading is tolerant on purpose: any 4xx makes Unisender redeliver for a day and then stop the hook, after
which no unsubscribe reaches us. So nothing in a JSON body is an error here: an event that cannot be read
(unknown name, missing address…) comes back as an *unrecognised* event, kept with the reason, and a body in
no known layout comes back with no events and a ``problem``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from app.connectors.base import ActivityKind
from app.connectors.text import clean_text
from app.connectors.unisender.activity import activity_kind
from app.connectors.unisender.exceptions import UnisenderHookParseError

MAX_HOOK_BODY_BYTES = 1_048_576
MAX_HOOK_EVENTS = 5_000
MAX_EMAIL_LENGTH = 254

# A contact's user fields edited in Unisender, event_data {"email", "fields": {name: new value}}. Unisender
# documents a "user data change" event class but not its name: this is the sandbox's (docs/specs), UNCONFIRMED.
DATA_CHANGE_EVENT = "contact_data_change"
# The documented events our hook registers for (a status filter of "*" = every status). The data-change event
# is read when it comes but registered only when configured (UNISENDER_EXTRA_HOOK_EVENTS): an event name
# Unisender does not know could make it refuse the whole registration, unsubscribes included; without it,
# changes made in Unisender reach us through the export reconcile.
REGISTERED_EVENT_NAMES = ("email_status", "subscribe", "unsubscribe", "campaign_status")
# The events we read.
HOOK_EVENT_NAMES = (*REGISTERED_EVENT_NAMES, DATA_CHANGE_EVENT)
# email_status values that mean the address no longer takes mail from this account: the recipient clicked
# "unsubscribe" in a letter, or a letter was not sent because the address had unsubscribed earlier.
UNSUBSCRIBED_STATUSES = frozenset({"ok_unsubscribed", "err_unsubscribed"})

_ENVELOPE_KEYS = frozenset({"auth", "retry_count"})  # differ between attempts of one delivery
_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")
# Only for bodies that are not JSON: where the sender put the auth value.
_AUTH_IN_TEXT = re.compile(rb'"auth"\s*:\s*"([0-9a-fA-F]{32})"')
_MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class HookEvent:
    """One event of a delivery, whatever its layout."""

    name: str  # event_name as sent ("" when missing)
    time: datetime | None  # UTC; None when missing or unreadable
    email: str | None  # lower-cased; None when missing or not an address
    list_ids: tuple[int, ...]
    status: str | None
    campaign_id: int | None
    raw: dict[str, Any]  # the event as received (flat layout: the body without auth and retry_count)
    problem: str | None = None  # why the event is unrecognised; None for a recognised event
    changed_fields: tuple[tuple[str, str], ...] = ()  # a data change's user fields: (name, new text)

    @property
    def recognised(self) -> bool:
        return self.problem is None

    @property
    def unsubscribes(self) -> bool:
        """True when the event means the address unsubscribed."""
        if not self.recognised:
            return False
        return self.name == "unsubscribe" or (
            self.name == "email_status" and self.status in UNSUBSCRIBED_STATUSES
        )

    @property
    def activity(self) -> ActivityKind | None:
        """What the event says happened to a letter (``activity.py``); None for other events."""
        return activity_kind(self.name, self.status) if self.recognised else None

    @property
    def unsubscribed_lists(self) -> tuple[int, ...]:
        """The lists an ``unsubscribe`` event names (one per event, as Unisender sends them); an
        ``email_status`` of unsubscribed names none: the address left everything."""
        return self.list_ids if self.unsubscribes and self.name == "unsubscribe" else ()

    @property
    def subscribed_lists(self) -> tuple[int, ...]:
        """The lists a ``subscribe`` event names: the address joined them (a signup form, a re-activation)."""
        return self.list_ids if self.recognised and self.name == "subscribe" else ()

    @property
    def field_values(self) -> dict[str, str]:
        """The user fields a data change (made in Unisender) set: name → new text ("" cleared it)."""
        return dict(self.changed_fields) if self.recognised else {}

    def identity(self) -> str:
        """What makes two deliveries carry the same event: Unisender gives events no id, and a redelivery
        differs from the first attempt in ``auth`` and ``retry_count`` only. Without a readable time the
        event's own JSON is all there is to compare."""
        if self.recognised and self.time is not None:
            parts: list[Any] = [
                self.name,
                self.time.isoformat(),
                self.email,
                self.status,
                list(self.list_ids),
                self.campaign_id,
            ]
            if self.changed_fields:  # two edits of one address in one second differ only here
                parts.append(dict(self.changed_fields))
        else:
            parts = ["raw", self.raw]
        return _canonical(parts)


@dataclass(frozen=True, slots=True)
class HookDelivery:
    """A whole POST: its layout, its events in order, and the redelivery counter if any."""

    layout: Literal["batched", "flat", "unknown"]
    events: tuple[HookEvent, ...]
    retry_count: int | None
    identity: str  # the body without auth and retry_count, canonical JSON
    problem: str | None = None  # why the layout is unknown


def verify_hook_auth(raw_body: bytes, api_key: str) -> bool:
    """True when ``auth`` is md5(raw body with its auth value replaced by ``api_key``); constant-time compare.

    Works on the bytes as received (a re-serialized body would hash differently); a body that is not JSON
    is checked too, so a signed but garbled delivery can still be told from a forged one.
    """
    if not api_key or len(raw_body) > MAX_HOOK_BODY_BYTES:
        return False
    body = bytes(raw_body)
    auth = _auth_value(body)
    if auth is None:
        return False
    # Byte-wise replacement of the first occurrence: auth is the first key, so this is the auth value.
    signed = body.replace(auth.encode("ascii"), api_key.encode("utf-8"), 1)
    expected = hashlib.md5(signed, usedforsecurity=False).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), auth.lower().encode("ascii"))


def read_delivery(raw_body: bytes) -> HookDelivery:
    """Read a delivery in any layout; raises UnisenderHookParseError only for a body that is not JSON."""
    payload = _load(raw_body)
    if not isinstance(payload, dict):
        return HookDelivery("unknown", (), None, _canonical(payload), "the body is not a JSON object")
    rest = {k: v for k, v in payload.items() if k not in _ENVELOPE_KEYS}
    identity = _canonical(rest)
    retry_count = _positive_int(payload.get("retry_count"), allow_zero=True)
    if "events_by_user" in payload:
        items = _batched_items(payload["events_by_user"])
        if len(items) > MAX_HOOK_EVENTS:
            problem = f"more than {MAX_HOOK_EVENTS} events"
            return HookDelivery("unknown", (), retry_count, identity, problem)
        events = tuple(parse_event(item) for item in items)
        return HookDelivery("batched", events, retry_count, identity)
    if "event_name" in payload:
        return HookDelivery("flat", (parse_event(rest),), retry_count, identity)
    return HookDelivery("unknown", (), retry_count, identity, "neither events_by_user nor event_name")


def parse_event(item: Any) -> HookEvent:
    """One event in the batched (``event_data``) or flat (fields at the top level) form."""
    raw: dict[str, Any] = item if isinstance(item, dict) else {"value": item}
    name = raw.get("event_name")
    if not isinstance(name, str) or not name:
        return _unrecognised(raw, "", "no event_name")
    data = raw.get("event_data", raw)
    if not isinstance(data, dict):
        return _unrecognised(raw, name, "event_data is not an object")
    when = raw.get("event_time")
    event = HookEvent(
        name=name,
        time=_time(data.get("event_time") if when is None else when),  # Go: inside event_data
        email=_email(data.get("email")),
        list_ids=_list_ids(data),
        status=_text(data.get("status")),
        campaign_id=_positive_int(data.get("campaign_id")),
        raw=raw,
        changed_fields=_changed_fields(data.get("fields")) if name == DATA_CHANGE_EVENT else (),
    )
    problem = _missing(event)
    if problem is None:
        return event
    return HookEvent(
        event.name,
        event.time,
        event.email,
        event.list_ids,
        event.status,
        event.campaign_id,
        raw,
        problem,
        event.changed_fields,
    )


# --- helpers ---------------------------------------------------------------------------------------------------


def _load(raw_body: bytes) -> Any:
    if not isinstance(raw_body, bytes | bytearray | memoryview):
        raise UnisenderHookParseError("hook body must be bytes")
    if len(raw_body) > MAX_HOOK_BODY_BYTES:
        raise UnisenderHookParseError(f"hook body exceeds {MAX_HOOK_BODY_BYTES} bytes")
    try:
        return json.loads(bytes(raw_body))
    except (ValueError, RecursionError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise UnisenderHookParseError("hook body is not valid JSON") from exc


def _auth_value(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        found = _AUTH_IN_TEXT.search(body)
        return found.group(1).decode("ascii") if found else None
    auth = payload.get("auth") if isinstance(payload, dict) else None
    return auth if isinstance(auth, str) and _MD5_HEX.fullmatch(auth) else None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)


def _values(container: Any) -> list[Any] | None:
    # PHP's json_encode writes an array whose keys are not 0..n-1 as an object: read both.
    if isinstance(container, list):
        return container
    if isinstance(container, dict):
        return list(container.values())
    return None


def _batched_items(users: Any) -> list[Any]:
    """Every event of every ``events_by_user`` entry, in order; what is not an entry with events is kept
    as an item of its own (it becomes an unrecognised event)."""
    entries = _values(users)
    if entries is None:
        return [{"events_by_user": users}]
    items: list[Any] = []
    for entry in entries:
        events = _values(entry.get("events")) if isinstance(entry, dict) else None
        if events is None:
            items.append({"events_by_user_entry": entry})
        else:
            items.extend(events)
        if len(items) > MAX_HOOK_EVENTS:
            break
    return items


def _unrecognised(raw: dict[str, Any], name: str, problem: str) -> HookEvent:
    return HookEvent(name, None, None, (), None, None, raw, problem)


def _missing(event: HookEvent) -> str | None:
    if event.name not in HOOK_EVENT_NAMES:
        return "unknown event name"
    if event.name in ("subscribe", "unsubscribe", "email_status", DATA_CHANGE_EVENT) and event.email is None:
        return "no valid email"
    if event.name == DATA_CHANGE_EVENT and not event.changed_fields:
        return "no fields"
    if event.name in ("email_status", "campaign_status") and event.status is None:
        return "no status"
    return None


def _changed_fields(value: Any) -> tuple[tuple[str, str], ...]:
    """A data change's ``fields`` object as (name, text) pairs; a value that is no scalar is dropped (it
    cannot be a user field's value), a null is a cleared field."""
    if not isinstance(value, dict):
        return ()
    out: list[tuple[str, str]] = []
    for name, raw in value.items():
        if not isinstance(name, str) or not name.strip():
            continue
        if raw is None:
            text = ""
        elif isinstance(raw, bool):
            text = "1" if raw else "0"
        elif isinstance(raw, str | int | float):
            text = clean_text(str(raw))
        else:
            continue
        out.append((clean_text(name).strip(), text))
    return tuple(out)


def _email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    email = clean_text(value).strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or len(email) > MAX_EMAIL_LENGTH or any(c.isspace() for c in email):
        return None
    return email


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return clean_text(value).strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _positive_int(value: Any, *, allow_zero: bool = False) -> int | None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdecimal() and len(value) <= 18):
            return None
        value = int(value)
    if isinstance(value, int) and low <= value <= _MAX_ID:
        return value
    return None


def _list_ids(data: dict[str, Any]) -> tuple[int, ...]:
    """``list_id`` (one) and ``list_ids`` (an array, or a comma-separated string); unreadable ids are
    dropped, not fatal: the list only narrows what an event is about."""
    found: list[Any] = [data.get("list_id")]
    many = data.get("list_ids")
    if isinstance(many, str):
        found.extend(many.split(","))
    else:
        found.extend(_values(many) or [])
    ids: list[int] = []
    for value in found:
        list_id = _positive_int(value)
        if list_id is not None and list_id not in ids:
            ids.append(list_id)
    return tuple(ids)


def _time(value: Any) -> datetime | None:
    """``YYYY-MM-DD hh:mm:ss`` in UTC (an explicit offset is honoured), or Unix seconds."""
    try:
        if isinstance(value, str) and 0 < len(value) <= 40:
            text = value.strip()
            if not text.isdecimal():
                parsed = datetime.fromisoformat(text)
                return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
            value = int(text)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None
