"""What the email platform holds of an address per our records (no I/O): the last push it accepted
(``outbox.pushed_payload``) and, for the fields it owns (targets of ``to_kommo`` rules, which no push carries),
what it told us of them (``outbox.platform_values``). ``app.sync.mapping`` compares desires with it; the
two-way rule (``app.sync.two_way``) tells echoes and stale reports by it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.sync.spec import PHONE_TARGET


def held_state(
    pushed: Mapping[str, Any] | None, platform_values: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """What the platform holds of an address per our records: our last accepted push (``outbox.pushed_payload``)
    with, under ``kept``, what the platform holds of the fields it owns (``outbox.platform_values``: the targets
    of ``to_kommo`` rules, which no push carries; ``platform_entry``). None when nothing was pushed."""
    if pushed is None:
        return None
    if not platform_values or pushed.get("delete"):
        return dict(pushed)
    return {
        **pushed,
        "kept": {t: str(e.get("v", "")) for t, e in platform_values.items() if isinstance(e, dict)},
    }


def platform_entry(value: str, at: int) -> dict[str, Any]:
    """An ``outbox.platform_values`` entry: the platform's value and when it was set there (epoch seconds; 0:
    unknown, taken from a push record)."""
    return {"v": value, "at": at}


def platform_record(
    pushed: Mapping[str, Any] | None,
    platform_values: Mapping[str, Any] | None,
    owned: Sequence[str],
    pushed_at: int = 0,
) -> dict[str, Any] | None:
    """``outbox.platform_values`` brought up to the spec in force (``owned``: its ``to_kommo`` targets). An owned
    target the push record still holds (pushed before its rule became ``to_kommo``, or by an older release)
    moves here, so what the platform holds of it survives the next push, which no longer carries it; the entry
    of a target no longer owned goes once the push record holds that target (the push record's is the later:
    ``held_value``). A moved entry is dated ``pushed_at``, when the platform accepted that push (epoch
    seconds). A pushed deletion leaves it as it is (accepting one cleared it: ``outbox_repo.mark_pushed``)."""
    values = dict(platform_values or {})
    if not pushed or pushed.get("delete"):
        return values or None
    fields = pushed.get("fields") or {}
    for target in owned:
        if target == PHONE_TARGET:
            if pushed.get("phone"):
                values[target] = platform_entry(str(pushed["phone"]), pushed_at)
        elif target in fields:
            values[target] = platform_entry(str(fields[target]), pushed_at)
    for target in list(values):
        if target not in owned and in_push_record(pushed, target):
            del values[target]
    return values or None


def in_push_record(pushed: Mapping[str, Any], target: str) -> bool:
    """Whether the push record ``pushed`` has ``target`` in its own slot (``fields[target]``; the phone:
    ``phone``)."""
    if target == PHONE_TARGET:
        return bool(pushed.get("phone"))
    return target in (pushed.get("fields") or {})


def held_value(held: Mapping[str, Any] | None, target: str) -> str | None:
    """What the platform holds in ``target`` per ``held`` (``held_state``), or None when it says nothing. The
    push record's own slot (``fields[target]``; for the phone, ``phone``) comes first: a target is there only
    when a push carried it or a change of a field we push recorded it, each time removing it from ``kept``
    (``record_held_value``), so whichever holds it is the latest."""
    if not held or held.get("delete"):
        return None
    if target == PHONE_TARGET:
        if held.get("phone"):
            return str(held["phone"])
    else:
        fields = held.get("fields") or {}
        if target in fields:
            return str(fields[target])
    kept = held.get("kept") or {}
    return str(kept[target]) if target in kept else None
