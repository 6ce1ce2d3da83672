"""One API call as every method sees it, its error type, and the parameter readers every method shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.unisender.hooks import account_unsubscribe_events, list_events
from sandbox.unisender.phpform import PhpParams, PhpValue
from sandbox.unisender.state import Account, Contact, SandboxState


class ApiError(Exception):
    """An API-level error, answered as HTTP 200 ``{"error": message, "code": code}``."""

    def __init__(self, code: str, message: str, *, with_result: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.with_result = with_result

    def body(self) -> dict[str, Any]:
        """The error envelope."""
        out: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.with_result:
            out["result"] = ""
        return out


def invalid_arg(message: str) -> ApiError:
    """An ``invalid_arg`` error."""
    return ApiError("invalid_arg", message)


@dataclass
class Call:
    """One API call: the account, its parsed parameters and the hook events it produced."""

    state: SandboxState
    account: Account
    method: str
    params: PhpParams
    events: list[dict[str, Any]] = field(default_factory=list)
    # Async tasks this call created (their completion and notify_url call are scheduled after the answer).
    tasks: list[str] = field(default_factory=list)
    base_url: str = ""  # where this sandbox is reachable (export download links)
    # One timestamp per call: a 500-row import would otherwise format the clock thousands of times.
    now: str = ""

    def __post_init__(self) -> None:
        if not self.now:
            self.now = self.state.now()

    def list_event(self, name: str, contact: Contact, list_id: int) -> None:
        """Record a ``subscribe``/``unsubscribe`` event for one list (delivered after the call answered)."""
        self.events.extend(list_events(name, self.now, contact.email, [list_id]))

    def account_unsubscribe(self, contact: Contact) -> None:
        """Record an account-wide unsubscribe: one ``unsubscribe`` event per list of the address."""
        self.events.extend(account_unsubscribe_events(contact, self.now))


# --- parameter readers ----------------------------------------------------------------------------------


def p_str(call: Call, name: str, *, required: bool = False) -> str | None:
    """A scalar parameter; an array where a scalar is expected is an error."""
    value = call.params.get(name)
    if value is None:
        if required:
            raise invalid_arg(f'Missing required argument "{name}"')
        return None
    if isinstance(value, dict):
        raise invalid_arg(f'Argument "{name}" must be a string, not an array')
    return value


def p_array(call: Call, name: str, *, required: bool = False) -> dict[str, PhpValue] | None:
    """A PHP array parameter (``name[...]=``); a scalar where an array is expected is an error."""
    value = call.params.get(name)
    if value is None:
        if required:
            raise invalid_arg(f'Missing required argument "{name}"')
        return None
    if not isinstance(value, dict):
        raise invalid_arg(f'Argument "{name}" must be an array (use {name}[0]=..., {name}[1]=...)')
    return value


def p_int(call: Call, name: str, *, required: bool = False, default: int | None = None) -> int | None:
    """An integer parameter."""
    raw = p_str(call, name, required=required)
    if raw is None or raw == "":
        if required:
            raise invalid_arg(f'Missing required argument "{name}"')
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise invalid_arg(f'Argument "{name}" must be an integer, got "{raw}"') from None


def p_flag(call: Call, name: str, *, allowed: tuple[int, ...] = (0, 1), default: int = 0) -> int:
    """A small enumerated integer flag (0/1 by default)."""
    value = p_int(call, name, default=default)
    assert value is not None
    if value not in allowed:
        raise invalid_arg(f'Argument "{name}" must be one of {", ".join(map(str, allowed))}')
    return value


def parse_ids(raw: str) -> list[int]:
    """Comma-separated ids (``"101,102"``); raises ValueError on anything else."""
    out: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise ValueError(part)
        out.append(int(part))
    return out


def p_list_ids(call: Call, name: str, *, required: bool = False) -> list[int] | None:
    """Existing list ids of the account from a comma-separated parameter."""
    raw = p_str(call, name, required=required)
    if raw is None:
        return None
    try:
        ids = parse_ids(raw)
    except ValueError:
        raise invalid_arg(f'Argument "{name}" must be comma-separated list ids, got "{raw}"') from None
    if required and not ids:
        raise invalid_arg(f'Missing required argument "{name}"')
    for list_id in ids:
        if list_id not in call.account.lists:
            raise invalid_arg(f"List with id={list_id} not found")
    return ids
