"""Unisender hook deliveries: verify the ``auth`` md5 and parse unsubscribe/subscribe events.

Format fixed for this project (the real payload is undocumented)::

    {"auth": "<md5 hex>", "events_by_user": [{"login": "...", "events": [
      {"event_name": "unsubscribe", "event_time": "2026-11-23 10:00:00",
       "event_data": {"email": "ann@example.com", "list_id": 101,
                      "status": "unsubscribed", "source": "link"}}]}]}

``auth`` is the md5 hex of the body serialised with ``"auth"`` set to the api_key; a retried delivery adds a
top-level ``retry_count``, covered by the same md5.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.connectors.unisender.exceptions import UnisenderHookParseError

MAX_HOOK_BODY_BYTES = 1_048_576
MAX_HOOK_EVENTS = 1_000
HOOK_EVENT_NAMES = frozenset({"unsubscribe", "subscribe"})
MAX_EMAIL_LENGTH = 254

_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True, slots=True)
class UnsubscribeEvent:
    """One contact event of a hook delivery (``event_name`` is ``unsubscribe`` or ``subscribe``)."""

    email: str  # lower-cased
    list_id: int | None  # None: account-wide
    event_name: str
    event_time: datetime  # UTC, timezone-aware
    status: str | None = None
    source: str | None = None
    login: str | None = None


def verify_hook_auth(raw_body: bytes, api_key: str) -> bool:
    """True when the body's ``auth`` is md5(body with auth replaced by ``api_key``); constant-time compare."""
    if not api_key or len(raw_body) > MAX_HOOK_BODY_BYTES:
        return False
    body = bytes(raw_body)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return False
    auth = payload.get("auth") if isinstance(payload, dict) else None
    if not isinstance(auth, str) or not _MD5_HEX.fullmatch(auth):
        return False
    # Byte-wise replace of the first occurrence, exactly as the sender built the signed body.
    signed = body.replace(auth.encode("ascii"), api_key.encode("utf-8"), 1)
    expected = hashlib.md5(signed, usedforsecurity=False).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), auth.lower().encode("ascii"))


def parse_hook(raw_body: bytes) -> list[UnsubscribeEvent]:
    """Parse a delivery into contact events; other event kinds are skipped, malformed input raises."""
    if not isinstance(raw_body, bytes | bytearray | memoryview):
        raise UnisenderHookParseError("hook body must be bytes")
    if len(raw_body) > MAX_HOOK_BODY_BYTES:
        raise UnisenderHookParseError(f"hook body exceeds {MAX_HOOK_BODY_BYTES} bytes")
    try:
        payload = json.loads(bytes(raw_body))
    except (ValueError, RecursionError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise UnisenderHookParseError("hook body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise UnisenderHookParseError("hook body must be a JSON object")
    users = payload.get("events_by_user")
    if not isinstance(users, list):
        raise UnisenderHookParseError("hook body needs an events_by_user array")

    events: list[UnsubscribeEvent] = []
    seen = 0
    for u, user in enumerate(users):
        if not isinstance(user, dict):
            raise UnisenderHookParseError(f"events_by_user[{u}] must be an object")
        login = user.get("login")
        if login is not None and not isinstance(login, str):
            raise UnisenderHookParseError(f"events_by_user[{u}].login must be a string")
        user_events = user.get("events")
        if not isinstance(user_events, list):
            raise UnisenderHookParseError(f"events_by_user[{u}].events must be an array")
        seen += len(user_events) or 1  # empty users still cost work: count them against the cap
        if seen > MAX_HOOK_EVENTS:
            raise UnisenderHookParseError(f"hook body carries more than {MAX_HOOK_EVENTS} events")
        for e, raw_event in enumerate(user_events):
            event = _parse_event(raw_event, f"events_by_user[{u}].events[{e}]", login)
            if event is not None:
                events.append(event)
    return events


def _parse_event(raw: Any, where: str, login: str | None) -> UnsubscribeEvent | None:
    if not isinstance(raw, dict):
        raise UnisenderHookParseError(f"{where} must be an object")
    name = raw.get("event_name")
    if not isinstance(name, str):
        raise UnisenderHookParseError(f"{where}.event_name must be a string")
    if name not in HOOK_EVENT_NAMES:
        return None  # other event classes (delivery, campaign status…) are not ours to handle
    data = raw.get("event_data")
    if not isinstance(data, dict):
        raise UnisenderHookParseError(f"{where}.event_data must be an object")
    return UnsubscribeEvent(
        email=_email(data.get("email"), where),
        list_id=_list_id(data.get("list_id"), where),
        event_name=name,
        event_time=_event_time(raw.get("event_time"), where),
        status=_optional_text(data.get("status"), f"{where}.event_data.status"),
        source=_optional_text(data.get("source"), f"{where}.event_data.source"),
        login=login,
    )


def _email(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UnisenderHookParseError(f"{where}.event_data.email must be a string")
    email = value.strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or len(email) > MAX_EMAIL_LENGTH or any(c.isspace() for c in email):
        raise UnisenderHookParseError(f"{where}.event_data.email is not an address")
    return email


def _list_id(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdecimal() and 0 < len(value) <= 18:
        return int(value)
    raise UnisenderHookParseError(f"{where}.event_data.list_id must be a positive integer or null")


def _event_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise UnisenderHookParseError(f"{where}.event_time must be a 'YYYY-MM-DD hh:mm:ss' string")
    try:
        parsed = datetime.fromisoformat(value)
        # Unisender's times are UTC without an offset; honour an explicit offset if one ever appears.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise UnisenderHookParseError(f"{where}.event_time is not a valid time") from exc


def _optional_text(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise UnisenderHookParseError(f"{where} must be a string or null")
