"""Custom-field values as text: the one form a REST read and a webhook body are both mapped onto.

Kommo hands the same value over in different shapes depending on the channel (spec §8.2): a checkbox is JSON
``true`` by REST and ``"1"`` in a webhook form, a date is a unix int (or an RFC 3339 string) by REST and a bare
string of digits in a webhook, a 2016-era birthday was ``15.06.2016``. A mirror that compares what it last
wrote with what it reads now must see one text for one value, or every change of channel looks like an edit.
The helpers here turn each wire shape into that text; ``schemas.py`` (REST) and ``webhooks.py`` (forms) call
them per value, so both stay cheap enough for a full sync.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime

DATE_TYPES = frozenset({"date", "date_time", "birthday"})

_DIGITS = re.compile(r"[0-9]{1,12}")
_DAY_MONTH_YEAR = re.compile(r"([0-9]{2})\.([0-9]{2})\.([0-9]{4})")


def number_text(value: int | float) -> str:
    """``3`` and ``3.0`` → ``"3"``; ``1.5`` → ``"1.5"`` (Python's shortest round-trip form)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def day_month_year_seconds(text: str) -> str | None:
    """``15.06.2016`` (the layout of old birthday values) → unix seconds of that day's UTC midnight, as text;
    None for anything else, an impossible date included."""
    match = _DAY_MONTH_YEAR.fullmatch(text)
    if match is None:
        return None
    day, month, year = (int(part) for part in match.groups())
    try:
        datetime(year, month, day)  # validates the calendar date; timegm alone would roll 31.02 over
    except ValueError:
        return None
    return str(calendar.timegm((year, month, day, 0, 0, 0)))


def date_text(text: str) -> str:
    """A date value given as text → unix seconds as text: digits stay, ``dd.mm.yyyy`` is that day's UTC
    midnight, an RFC 3339 timestamp (what Kommo's own library writes) is its instant; anything else is kept
    as it is, so nothing a user typed is lost."""
    if _DIGITS.fullmatch(text):
        return text
    seconds = day_month_year_seconds(text)
    if seconds is not None:
        return seconds
    if len(text) < 10 or not text[:4].isdigit():
        return text  # cheap exit before fromisoformat for values that cannot be a timestamp
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # Kommo's timestamps are UTC unless they say otherwise
        return str(int(moment.timestamp()))
    except (ValueError, OverflowError):  # not a timestamp (OverflowError: defensive, for extreme years)
        return text
