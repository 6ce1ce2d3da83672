"""When each value of a CRM contact last changed, per field, as far as our copy saw it.

Kommo stamps a contact's version as a whole (``updated_at``), so a contact edited in one field looks changed in
all of them. The two-way rule (``app.sync.two_way``) judges a conflict per field instead: each applied version
stamps the values it changed (compared with the version we held) with its own version time, in
``contact.field_times`` (source key → Kommo version time). A value no version has changed since we first
stored the contact is at most as old as that first version (its time is kept under ``BASE``); a row stored
before these stamps existed has none, and its contact's version time stands for every field, as before.

Only the sources a two-way rule may write are stamped (``app.sync.spec_check``), by ``crm_write.source``'s keys
(``app.sync.crm_writes_repo.source_key``): ``name``, ``first_name``, ``last_name``, ``custom_field:<id>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BASE = "*"
_ATTRIBUTES = ("first_name", "last_name")
_SEP = "\x1f"  # joins a multi-value field's texts (never part of a value: the boundary cleaning removes it)


def source_values(name: str, data: Mapping[str, Any] | None) -> dict[str, str]:
    """Every writable source value of a contact as text, by source key (an empty value is left out)."""
    data = data or {}
    out = {"name": name} if name else {}
    for key in _ATTRIBUTES:
        if value := data.get(key):
            out[key] = str(value)
    for field_id, texts in (data.get("fields") or {}).items():
        if texts:
            out[f"custom_field:{field_id}"] = _SEP.join(str(t) for t in texts)
    return out


def source_text(key: str, name: str, data: Mapping[str, Any] | None) -> str:
    """One source's value as ``source_values`` writes it ("" when empty)."""
    return source_values(name, data).get(key, "")


def stamp(
    held: Mapping[str, int] | None,
    before: Mapping[str, str] | None,
    after: Mapping[str, str],
    version: int,
    held_version: int,
) -> dict[str, int]:
    """The change times after applying a version (time ``version``) whose values are ``after`` over the one we
    held (values ``before``, times ``held``, version time ``held_version``; ``before`` None: no contact held)."""
    if before is None:
        return {BASE: version}
    times = dict(held) if held else {BASE: held_version}
    for key in before.keys() | after.keys():
        if before.get(key, "") != after.get(key, ""):
            times[key] = version
    return times


def changed_at(times: Mapping[str, int] | None, key: str, version: int) -> int:
    """When the source ``key`` last changed in the CRM; ``version`` (the contact's) when nothing says."""
    if not times:
        return version
    return int(times.get(key, times.get(BASE, version)))
