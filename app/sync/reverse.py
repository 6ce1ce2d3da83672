"""Values coming back from the email platform: a user field's text turned into the CRM field's type (the
reverse of ``app.sync.mapping``'s conversions), and the comparison that tells two texts of one field apart.
Pure: no I/O here.

The platform's texts are what its UI and export show: numbers with ``.`` (or ``,``), dates ``YYYY-MM-DD``
(``DD.MM.YYYY`` is read too), booleans ``1``/``0``. A CRM value is what ``CrmFieldWrite`` carries; the stored
text is the same value as ``CrmFieldValue`` holds it (what ``contact.data`` keeps and the forward mapping
reads), so that a value written back derives exactly what the platform now holds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from app.connectors.base import CrmValue
from app.sync.spec import SourceKind, SourceRef

# CRM types whose value is the text itself (an option is written by its text).
_AS_TEXT = frozenset({"text", "textarea", "url", "select", "radiobutton"})
_DATES = frozenset({"date", "date_time", "birthday"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class Unconvertible(ValueError):
    """The platform's text has no value of the CRM field's type (or the type cannot be written)."""


def _decimal(text: str) -> Decimal | None:
    try:
        d = Decimal(text.strip().replace(",", "."))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _day(text: str) -> date | None:
    """The calendar day a platform date (or date and time) names."""
    value = text.strip()
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%d.%m.%Y"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


def _moment(text: str) -> int | None:
    """Unix seconds of a platform date (midnight UTC) or date and time (UTC, as the forward mapping wrote)."""
    value = text.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%d.%m.%Y"):
        try:
            return int(datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    return None


def crm_value(ref: SourceRef, text: str) -> tuple[CrmValue, str]:
    """The CRM value of the platform's ``text`` for source ``ref`` and its stored text ("" = no value);
    raises ``Unconvertible``. An empty text clears the CRM field (a checkbox: unchecked, stored "0")."""
    if ref.kind in (SourceKind.NAME, SourceKind.FIRST_NAME, SourceKind.LAST_NAME):
        return text, text
    if ref.kind is not SourceKind.CUSTOM_FIELD:
        raise Unconvertible(f"{ref.kind} is derived by the CRM and cannot be written")
    kind = ref.type
    if kind == "checkbox":
        flag = text.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise Unconvertible(f"{text!r} is not a checkbox value")
        # Stored as Kommo's REST reads it back (``false`` → "0"), so the next read is no change of its own.
        return flag in _TRUE, "1" if flag in _TRUE else "0"
    if not text.strip():
        return None, ""
    if kind in _AS_TEXT:
        return text, text
    if kind == "numeric":
        number = _decimal(text)
        if number is None:
            raise Unconvertible(f"{text!r} is not a number")
        if number == number.to_integral_value():
            return int(number), str(int(number))
        return float(number), format(number.normalize(), "f")
    if kind in _DATES:
        seconds = _moment(text)
        if seconds is None:
            raise Unconvertible(f"{text!r} is not a date")
        return seconds, str(seconds)
    raise Unconvertible(f"a {kind} field cannot be written back")


def same(target_type: str, a: str, b: str) -> bool:
    """Whether two texts of a platform field of ``target_type`` are the same value (``12.50`` is ``12.5``,
    ``02.01.2026`` is ``2026-01-02``): a difference of spelling is no change, so it is never written back."""
    if a == b:
        return True
    if target_type == "number":
        x, y = _decimal(a), _decimal(b)
        return x is not None and x == y
    if target_type == "date":
        d = _day(a)
        return d is not None and d == _day(b)
    if target_type == "bool":
        fa, fb = a.strip().lower(), b.strip().lower()
        return (fa in _TRUE and fb in _TRUE) or (fa in _FALSE and fb in _FALSE)
    return False
