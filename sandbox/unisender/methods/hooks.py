"""Event hooks: setHook and removeHook (delivery itself lives in ``sandbox.unisender.hooks``)."""

from __future__ import annotations

import re
from typing import Any

from sandbox.unisender.hooks import HOOK_EVENTS
from sandbox.unisender.methods.call import Call, invalid_arg, p_array, p_flag, p_int, p_str
from sandbox.unisender.state import Hook

HOOK_FORMATS = frozenset({"json_post"})


def set_hook(call: Call) -> dict[str, Any]:
    """setHook: register (or replace, keyed by URL) an event hook.

    ``events`` comes as a list (``events[]=unsubscribe``) or as a map of event → status filter
    (``events[unsubscribe]=*``); both are accepted.
    """
    url = _hook_url(call)
    events_arr = p_array(call, "events", required=True)
    assert events_arr is not None
    events: dict[str, str] = {}
    for key, value in events_arr.items():
        if isinstance(value, dict):
            raise invalid_arg(f'Invalid filter for event "{key}"')
        name, statuses = (value, "*") if key.isdigit() else (key, value)
        if name not in HOOK_EVENTS:
            raise invalid_arg(f'Unknown event "{name}"')
        events[name] = statuses or "*"
    if not events:
        raise invalid_arg('Missing required argument "events"')
    event_format = p_str(call, "event_format") or "json_post"
    if event_format not in HOOK_FORMATS:
        raise invalid_arg(f'Invalid event_format "{event_format}"')
    max_parallel = p_int(call, "max_parallel", default=10)
    assert max_parallel is not None
    if not 1 <= max_parallel <= 100:
        raise invalid_arg('Argument "max_parallel" must be between 1 and 100')
    single_event = p_flag(call, "single_event") == 1
    status = p_str(call, "status") or "active"
    if status not in ("active", "stopped"):
        raise invalid_arg('Argument "status" must be "active" or "stopped"')
    call.account.hooks[url] = Hook(
        url=url,
        events=events,
        event_format=event_format,
        max_parallel=max_parallel,
        single_event=single_event,
        status=status,
    )
    return {}


def remove_hook(call: Call) -> dict[str, Any]:
    """removeHook: delete the hook at ``hook_url``; an unknown URL is not an error (its answer is
    undocumented; removing twice is harmless)."""
    call.account.hooks.pop(_hook_url(call), None)
    return {}


def _hook_url(call: Call) -> str:
    url = (p_str(call, "hook_url", required=True) or "").strip()
    if not re.match(r"^https?://[^\s/]+", url):
        raise invalid_arg(f'Invalid hook_url "{url}"')
    return url
