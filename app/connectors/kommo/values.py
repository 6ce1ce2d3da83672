"""Custom-field values as text: the one form a REST read and a webhook body are both mapped onto.

Kommo hands the same value over in different shapes depending on the channel (spec §8.2): a checkbox is JSON
``true`` by REST and ``"1"`` in a webhook form, a date is a unix int (or an RFC 3339 string) by REST and a bare
string of digits in a webhook, a 2016-era birthday was ``15.06.2016``. A mirror that compares what it last
wrote with what it reads now must see one text for one value, or every change of channel looks like an edit.
Only where the field's type is known: a webhook does not say it, and ``{value: "15.06.2016"}`` there may be a
text field's (kept as typed; the mapping reads it as a date when the field is one).
The helpers here turn each wire shape into that text; ``schemas.py`` (REST) and ``webhooks.py`` (forms) call
them per value, so both stay cheap enough for a full sync.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from app.connectors.base import day_month_year_seconds

DATE_TYPES = frozenset({"date", "date_time", "birthday"})

_DIGITS = re.compile(r"[0-9]{1,12}")


def number_text(value: int | float) -> str:
    """``3`` and ``3.0`` → ``"3"``; ``1.5`` → ``"1.5"`` (Python's shortest round-trip form)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


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
