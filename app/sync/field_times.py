"""When each value of a CRM contact last changed, per field, as far as our copy saw it.

Kommo stamps a contact's version as a whole (``updated_at``), so a contact edited in one field looks changed in
all of them. The two-way rule (``app.sync.two_way``) judges a conflict per field instead: each applied version
stamps the values it changed (compared with the version we held) with its own version time, in
``contact.field_times`` (source key → time). A value no version has changed since we first stored the contact
is at most as old as that first version (its time is kept under ``BASE``).

The times are valid only for the version they were computed with (kept under ``AT``): a row whose version
moved without them (written by a release that did not keep them, during a rolling upgrade) or that has none
(stored before they existed) is judged by its contact's version time for every field, as before, until its
next version starts them again from there. A version read live from Kommo is the truth as of the read: when
it is older than the version we held (a forged future timestamp), no time may be later than it.

Stamped are the kinds of source a two-way rule can write (``app.sync.spec_check``): the name, first and last
name, and every custom field, by ``crm_write.source``'s keys (``app.sync.crm_writes_repo.source_key``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BASE = "*"
AT = "@"
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


def first(version: int) -> dict[str, int]:
    """The times of a contact stored for the first time, at ``version``."""
    return {BASE: version, AT: version}


def valid(times: Mapping[str, int] | None, version: int) -> bool:
    """Whether ``times`` were kept up to the row's ``version``."""
    return times is not None and times.get(AT) == version


def stamp(
    held: Mapping[str, int] | None,
    before: Mapping[str, str],
    after: Mapping[str, str],
    version: int,
    held_version: int,
) -> dict[str, int]:
    """The times after applying a version (time ``version``, values ``after``) over the row we held (values
    ``before``, times ``held``, version time ``held_version``)."""
    times = (
        {k: t for k, t in held.items() if k != AT}
        if held and valid(held, held_version)
        else {BASE: held_version}
    )
    if version < held_version:
        # The truth read live is older than what we held: nothing of ours can be later than it.
        times = {k: min(t, version) for k, t in times.items()}
    for key in before.keys() | after.keys():
        if before.get(key, "") != after.get(key, ""):
            times[key] = version
    times[AT] = version
    return times


def changed_at(times: Mapping[str, int] | None, key: str, version: int) -> int:
    """When the source ``key`` last changed in the CRM, for a row at ``version``; ``version`` when its times
    say nothing (none kept, or not kept up to this version)."""
    if not times or not valid(times, version):
        return version
    return int(times.get(key, times.get(BASE, version)))
