"""Unisender API methods as the sandbox implements them (spec §2-§6); each takes a ``Call`` and returns ``result``."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.unisender.hooks import HOOK_EVENTS, account_unsubscribe_events, list_events
from sandbox.unisender.phpform import PhpParams, PhpValue
from sandbox.unisender.state import (
    SYSTEM_FIELDS,
    Account,
    Contact,
    Field,
    Hook,
    MailList,
    Membership,
    SandboxState,
)

EMAIL_STATUSES_IMPORTABLE = frozenset({"new", "active", "inactive", "unsubscribed"})
AVAILABILITIES = frozenset(
    {"available", "unreachable", "temp_unreachable", "mailbox_full", "spam_rejected", "spam_folder"}
)
FIELD_TYPES = frozenset({"string", "text", "number", "date", "bool"})
HOOK_FORMATS = frozenset({"json_post"})

_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:"
    + _LABEL
    + r"\.)+[^\W\d_]{2,63}$"
)
_PHONE_RE = re.compile(r"^\+?[1-9]\d{9,14}$")
_FIELD_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FIELD_NAME_HYPHEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


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


# --- parameter helpers ----------------------------------------------------------------------------------


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


def normalise_email(raw: str) -> str | None:
    """Lower-cased address if it is a valid email, else None."""
    value = raw.strip().lower()
    if len(value) > 254 or "@" not in value or len(value.split("@", 1)[0]) > 64:
        return None
    return value if _EMAIL_RE.match(value) else None


def normalise_phone(raw: str) -> str | None:
    """``+digits`` if it is a plausible international number, else None."""
    value = re.sub(r"[\s()-]", "", raw)
    if not _PHONE_RE.match(value):
        return None
    return value if value.startswith("+") else "+" + value


def split_tags(raw: str) -> list[str]:
    """Comma-separated tag names, without empties and duplicates, order kept."""
    seen: dict[str, None] = {}
    for part in raw.split(","):
        part = part.strip()
        if part:
            seen[part] = None
    return list(seen)


def parse_time(raw: str) -> str | None:
    """A subscribe time in ``YYYY-MM-DD hh:mm:ss`` or ``YYYY-MM-DD``, normalised; None if invalid."""
    raw = raw.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, fmt).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
    return None


def is_role_address(call: Call, email: str) -> bool:
    """Role addresses (info@, sales@, ...) that the real API refuses to import."""
    return email.split("@", 1)[0] in call.state.config.role_local_parts


def new_contact(call: Call, email: str | None, phone: str | None, status: str) -> Contact:
    """Create and index a contact."""
    account = call.account
    contact = Contact(
        person_id=call.state.new_person_id(),
        email=email,
        phone=phone,
        status=status,
        availability="available",
        phone_status="active",
        phone_availability="available",
        added_at=call.now,
    )
    if email:
        account.contacts_by_email[email] = contact
    if phone:
        account.contacts_by_phone[phone] = contact
    account.contacts_by_id[contact.person_id] = contact
    return contact


def join_list(account: Account, contact: Contact, list_id: int, status: str, added_at: str) -> None:
    """Add or update a membership, keeping the list's member index in step."""
    contact.lists[list_id] = Membership(status=status, added_at=added_at)
    account.lists[list_id].members.add(contact.person_id)


def leave_list(account: Account, contact: Contact, list_id: int) -> None:
    """Remove a membership."""
    contact.lists.pop(list_id, None)
    lst = account.lists.get(list_id)
    if lst is not None:
        lst.members.discard(contact.person_id)


# --- importContacts -----------------------------------------------------------------------------------


@dataclass
class _ImportRow:
    index: str
    values: dict[str, str]


class _RowRejected(Exception):
    def __init__(self, code_key: str, message: str) -> None:
        super().__init__(message)
        self.code_key = code_key
        self.message = message


def _row_ids(values: dict[str, str], column: str) -> list[int]:
    raw = values.get(column)
    if not raw:
        return []
    try:
        return parse_ids(raw)
    except ValueError:
        raise _RowRejected("invalid_value", f'Invalid list ids "{raw}" in column {column}') from None


def import_contacts(call: Call) -> dict[str, Any]:
    """importContacts: bulk upsert/delete with per-row log (spec §2)."""
    cfg = call.state.config
    account = call.account
    names_arr = p_array(call, "field_names", required=True)
    assert names_arr is not None
    columns: dict[str, str] = {}
    for key, name in names_arr.items():
        if isinstance(name, dict):
            raise invalid_arg("field_names must be a flat array of field names")
        columns[key] = name.strip()
    names = list(columns.values())
    if len(set(names)) != len(names):
        raise invalid_arg("Duplicate field names in field_names")
    if "email" not in names and "phone" not in names:
        raise invalid_arg('field_names must contain "email" or "phone"')
    unknown = [n for n in names if n not in SYSTEM_FIELDS and n not in account.fields_by_name]
    if unknown:
        raise invalid_arg(f'Unknown field name "{unknown[0]}" in field_names')
    user_fields = [n for n in names if n not in SYSTEM_FIELDS]
    if len(user_fields) > cfg.max_import_user_fields:
        raise invalid_arg(f"Too many user fields: at most {cfg.max_import_user_fields} per call")
    data = p_array(call, "data", required=True)
    assert data is not None
    if not data:
        raise invalid_arg("data is empty")
    if len(data) > cfg.max_import_rows:
        raise invalid_arg(f"Too many rows in data: {len(data)}, at most {cfg.max_import_rows} per call")
    overwrite_tags = p_flag(call, "overwrite_tags") == 1
    overwrite_lists = p_flag(call, "overwrite_lists") == 1
    # Legacy arguments (double_optin, force_import) are accepted and ignored, like any unknown argument.

    rows: list[_ImportRow | tuple[str, str]] = []
    for index, row in data.items():
        if not isinstance(row, dict):
            rows.append((index, "Row must be an array of cells"))
            continue
        values: dict[str, str] = {}
        bad = False
        for col_key, name in columns.items():
            cell = row.get(col_key, "")
            if isinstance(cell, dict):
                bad = True
                break
            values[name] = cell
        rows.append((index, "Cell values must be strings") if bad else _ImportRow(index, values))

    counters = {"total": len(data), "inserted": 0, "updated": 0, "deleted": 0, "new_emails": 0, "invalid": 0}
    log: list[dict[str, Any]] = []

    def add_log(index: str, code_key: str, message: str) -> None:
        log.append(
            {
                "index": index if cfg.log_index_as_string else int(index) if index.isdigit() else index,
                "code": cfg.log_codes.get(code_key, code_key),
                "message": message,
            }
        )

    has_list_columns = any(
        c in names
        for c in (
            "email_list_ids",
            "email_unsubscribed_list_ids",
            "email_excluded_list_ids",
            "phone_list_ids",
            "phone_unsubscribed_list_ids",
            "phone_excluded_list_ids",
        )
    )
    call_no = account.import_calls = account.import_calls + 1
    seen: set[str] = set()
    for item in rows:
        if isinstance(item, tuple):
            add_log(item[0], "invalid_value", item[1])
            counters["invalid"] += 1
            continue
        try:
            outcome = _import_row(
                call, item, seen, overwrite_tags, overwrite_lists, has_list_columns, add_log
            )
        except _RowRejected as rejected:
            add_log(item.index, rejected.code_key, rejected.message)
            if rejected.code_key != "duplicate":
                counters["invalid"] += 1
            continue
        counters[outcome] += 1
        email = normalise_email(item.values["email"]) if item.values.get("email", "").strip() else None
        phone = normalise_phone(item.values["phone"]) if item.values.get("phone", "").strip() else None
        contact = account.find(email, None) if email else None
        if outcome != "deleted" and contact is not None and contact.status == "new":
            counters["new_emails"] += 1
        seq = len(account.ledger)
        account.ledger.append(
            {
                "seq": seq,
                "call": call_no,
                "index": item.index,
                "at": call.now,
                "email": email,
                "phone": phone,
                "op": "delete" if outcome == "deleted" else "upsert",
                "outcome": outcome,
                "data": dict(item.values),
                "overwrite_tags": int(overwrite_tags),
                "overwrite_lists": int(overwrite_lists),
            }
        )
        account.ledger_by_email[email or phone or ""].append(seq)
    return {**counters, "log": log}


def _import_row(
    call: Call,
    row: _ImportRow,
    seen: set[str],
    overwrite_tags: bool,
    overwrite_lists: bool,
    has_list_columns: bool,
    add_log: Callable[[str, str, str], None],
) -> str:
    """Apply one row; returns the counter it lands in, raises _RowRejected to skip it."""
    cfg = call.state.config
    account = call.account
    values = row.values
    raw_email = values.get("email", "").strip()
    raw_phone = values.get("phone", "").strip()
    email = phone = None
    if raw_email:
        email = normalise_email(raw_email)
        if email is None:
            raise _RowRejected("invalid_email", f'Invalid email address "{raw_email}"')
    if raw_phone:
        phone = normalise_phone(raw_phone)
        if phone is None:
            raise _RowRejected("invalid_phone", f'Invalid phone number "{raw_phone}"')
    if email is None and phone is None:
        raise _RowRejected("invalid_email", "Row has neither an email address nor a phone number")
    for key in (email, phone):
        if key is not None and key in seen:
            raise _RowRejected("duplicate", f'"{key}" already occurs in an earlier row of this call')
    delete_raw = values.get("delete", "").strip()
    if delete_raw not in ("", "0", "1"):
        raise _RowRejected("invalid_value", f'Invalid value "{delete_raw}" in column delete (use 0 or 1)')

    by_email = account.contacts_by_email.get(email) if email else None
    by_phone = account.contacts_by_phone.get(phone) if phone else None
    if by_email is not None and by_phone is not None and by_email is not by_phone:
        raise _RowRejected(
            "owned_by_different",
            f"Contacts {email} and {phone} already exist but owned by different subscribers",
        )
    for key in (email, phone):
        if key is not None:
            seen.add(key)
    existing = by_email or by_phone

    if delete_raw == "1":
        if existing is not None:
            account.remove_contact(existing)
        return "deleted"

    if email is not None and cfg.reject_role_addresses and is_role_address(call, email):
        raise _RowRejected("role_address", f'Role address "{email}" is not imported')

    status = values.get("email_status", "").strip()
    if status and status not in EMAIL_STATUSES_IMPORTABLE:
        raise _RowRejected("invalid_value", f'Invalid email_status "{status}"')
    phone_status = values.get("phone_status", "").strip()
    if phone_status and phone_status not in EMAIL_STATUSES_IMPORTABLE:
        raise _RowRejected("invalid_value", f'Invalid phone_status "{phone_status}"')
    availability = values.get("email_availability", "").strip()
    if availability and availability not in AVAILABILITIES:
        raise _RowRejected("invalid_value", f'Invalid email_availability "{availability}"')

    list_ids = _row_ids(values, "email_list_ids") + _row_ids(values, "phone_list_ids")
    unsub_ids = _row_ids(values, "email_unsubscribed_list_ids") + _row_ids(
        values, "phone_unsubscribed_list_ids"
    )
    excl_ids = _row_ids(values, "email_excluded_list_ids") + _row_ids(values, "phone_excluded_list_ids")
    for list_id in (*list_ids, *unsub_ids, *excl_ids):
        if list_id not in account.lists:
            raise _RowRejected("invalid_list", f"List with id={list_id} not found")
    times: list[str] = []
    for column, ids_column in (
        ("email_subscribe_times", "email_list_ids"),
        ("phone_subscribe_times", "phone_list_ids"),
    ):
        raw_times = values.get(column, "").strip()
        if not raw_times:
            continue
        parts = [t for t in raw_times.split(",") if t.strip()]
        if len(parts) != len(_row_ids(values, ids_column)):
            raise _RowRejected("invalid_value", f"{column} must have as many entries as {ids_column}")
        for part in parts:
            parsed = parse_time(part)
            if parsed is None:
                raise _RowRejected("invalid_value", f'Invalid time "{part.strip()}" in {column}')
            times.append(parsed)
    tag_names = split_tags(values["tags"]) if "tags" in values else None
    if tag_names is not None and len(tag_names) > cfg.max_tags:
        raise _RowRejected("too_many_tags", f"At most {cfg.max_tags} tags per contact")

    denied = (
        existing is not None
        and bool(status)
        and status != existing.status
        and existing.status not in cfg.mutable_statuses
    )
    denied_message = (
        f'Status of "{email or phone}" is "{existing.status}" and cannot be changed to "{status}"'
        if existing is not None
        else ""
    )
    if denied and cfg.status_change_denied_skips_row:
        raise _RowRejected("status_change_denied", denied_message)

    now = call.now
    if existing is None:
        contact = new_contact(call, email, phone, status or "new")
        if phone_status:
            contact.phone_status = phone_status
        outcome = "inserted"
    else:
        contact = existing
        outcome = "updated"
        if email and contact.email is None:
            contact.email = email
            account.contacts_by_email[email] = contact
        if phone and contact.phone is None:
            contact.phone = phone
            account.contacts_by_phone[phone] = contact
        if denied:
            add_log(row.index, "status_change_denied", denied_message)
        elif status and status != contact.status:
            contact.status = status
            if status == "unsubscribed" and cfg.notify_api_unsubscribes:
                call.account_unsubscribe(contact)
        if phone_status and contact.phone_status in cfg.mutable_statuses:
            contact.phone_status = phone_status
    if availability:
        contact.availability = availability

    for name, value in values.items():
        if name in SYSTEM_FIELDS:
            continue
        fid = account.fields_by_name[name].id
        if value == "":
            contact.fields.pop(fid, None)
        else:
            contact.fields[fid] = value

    if tag_names is not None:
        ids = [account.tag_id(t) for t in tag_names]
        if overwrite_tags:
            contact.tags = ids
        else:
            contact.tags.extend(t for t in ids if t not in contact.tags)

    if overwrite_lists and has_list_columns:
        keep = set(list_ids) | set(unsub_ids)
        for list_id in [lid for lid in contact.lists if lid not in keep]:
            leave_list(account, contact, list_id)
    for pos, list_id in enumerate(list_ids):
        added_at = times[pos] if pos < len(times) else now
        current = contact.lists.get(list_id)
        if current is None:
            join_list(account, contact, list_id, "active", added_at)
        elif current.status == "unsubscribed":
            continue  # never turns an unsubscribe back into active
        elif pos < len(times):
            current.added_at = added_at
    for list_id in unsub_ids:
        current = contact.lists.get(list_id)
        if current is not None and current.status == "unsubscribed":
            continue
        join_list(account, contact, list_id, "unsubscribed", current.added_at if current else now)
        # Only a transition is an event: a membership created already unsubscribed notifies nobody.
        if current is not None and cfg.notify_api_unsubscribes:
            call.list_event("unsubscribe", contact, list_id)
    for list_id in excl_ids:
        leave_list(account, contact, list_id)
    return outcome


# --- reading contacts ---------------------------------------------------------------------------------


def _require_email(call: Call, name: str = "email") -> str:
    raw = p_str(call, name, required=True)
    assert raw is not None
    email = normalise_email(raw)
    if email is None:
        raise invalid_arg(f'Invalid email address "{raw}"')
    return email


def get_contact(call: Call) -> dict[str, Any]:
    """getContact (spec §3): email object, plus lists/fields on request."""
    raw = p_str(call, "email", required=True)
    assert raw is not None
    email = normalise_email(raw)
    contact = call.account.contacts_by_email.get(email) if email else None
    if contact is None:
        raise ApiError("unspecified", f'Contact "{raw.strip()}" not found')
    email_obj: dict[str, Any] = {
        "email": contact.email,
        "added_at": contact.added_at,
        "status": contact.status,
        "availability": contact.availability,
    }
    if p_flag(call, "include_details") == 1:
        email_obj.update(
            {
                "last_send_datetime": None,
                "last_delivery_datetime": None,
                "last_read_datetime": None,
                "last_click_datetime": None,
                "rating": None,
            }
        )
    result: dict[str, Any] = {"email": email_obj}
    if p_flag(call, "include_lists") == 1:
        result["lists"] = [
            {"id": lid, "status": m.status, "added_at": m.added_at}
            for lid, m in sorted(contact.lists.items())
        ]
    if p_flag(call, "include_fields") == 1:
        result["fields"] = call.account.field_values(contact)
    return result


def is_contact_in_lists(call: Call) -> bool:
    """isContactInLists: membership (any per-list status) of one, any or all lists."""
    email = _require_email(call)
    ids = p_list_ids(call, "list_ids", required=True)
    assert ids is not None
    condition = (p_str(call, "condition") or "or").strip().lower()
    if condition not in ("or", "and"):
        raise invalid_arg('Argument "condition" must be "or" or "and"')
    contact = call.account.contacts_by_email.get(email)
    if contact is None:
        return False
    hits = [lid in contact.lists for lid in ids]
    return all(hits) if condition == "and" else any(hits)


def get_contact_count(call: Call) -> dict[str, Any]:
    """getContactCount: members of a list, optionally by tag, channel and substring."""
    list_id = p_int(call, "list_id", required=True)
    assert list_id is not None
    lst = call.account.lists.get(list_id)
    if lst is None:
        raise invalid_arg(f"List with id={list_id} not found")
    search_params = p_array(call, "params") or {}
    flat = {k: v for k, v in search_params.items() if isinstance(v, str)}
    tag_id = flat.get("tagId")
    kind = flat.get("type")
    search = flat.get("search")
    if kind is not None and kind not in ("address", "phone"):
        raise invalid_arg('params[type] must be "address" or "phone"')
    if search is not None and kind is None:
        raise invalid_arg("params[search] needs params[type]")
    count = 0
    for pid in lst.members:
        contact = call.account.contacts_by_id[pid]
        if tag_id is not None and (not tag_id.isdigit() or int(tag_id) not in contact.tags):
            continue
        value = contact.email if kind == "address" else contact.phone if kind == "phone" else ""
        if kind is not None and value is None:
            continue
        if search and search.lower() not in (value or "").lower():
            continue
        count += 1
    return {"listId": list_id, "searchParams": flat, "count": count}


def get_total_contacts_count(call: Call) -> dict[str, Any]:
    """getTotalContactsCount(login)."""
    login = p_str(call, "login", required=True)
    if login != call.account.login:
        raise ApiError("unspecified", "Can't find user by provided login")
    return {"total": len(call.account.contacts_by_id)}


# --- subscribe / exclude / unsubscribe ----------------------------------------------------------------


def _target(call: Call) -> tuple[Contact, list[int]]:
    kind = p_str(call, "contact_type", required=True)
    raw = p_str(call, "contact", required=True)
    assert raw is not None
    if kind == "email":
        key = normalise_email(raw)
        if key is None:
            raise invalid_arg(f'Invalid email address "{raw}"')
        contact = call.account.contacts_by_email.get(key)
    elif kind == "phone":
        key = normalise_phone(raw)
        if key is None:
            raise invalid_arg(f'Invalid phone number "{raw}"')
        contact = call.account.contacts_by_phone.get(key)
    else:
        raise invalid_arg('Argument "contact_type" must be "email" or "phone"')
    not_found = ApiError("unspecified", f'Contact "{raw.strip()}" not found', with_result=True)
    if contact is None:
        raise not_found
    requested = p_list_ids(call, "list_ids")
    ids = [lid for lid in (requested or list(contact.lists)) if lid in contact.lists]
    if not ids:
        raise not_found
    return contact, ids


def exclude(call: Call) -> dict[str, Any]:
    """exclude: remove from lists without marking unsubscribed (re-subscribable)."""
    contact, ids = _target(call)
    for list_id in ids:
        leave_list(call.account, contact, list_id)
    return {}


def unsubscribe(call: Call) -> dict[str, Any]:
    """unsubscribe: keep in the lists, mark the memberships unsubscribed."""
    contact, ids = _target(call)
    for list_id in ids:
        membership = contact.lists[list_id]
        if membership.status != "unsubscribed":
            membership.status = "unsubscribed"
            if call.state.config.notify_api_unsubscribes:
                call.list_event("unsubscribe", contact, list_id)
    return {}


def subscribe(call: Call) -> dict[str, Any]:
    """subscribe (spec §5), reduced: no letters are sent; statuses follow double_optin."""
    cfg = call.state.config
    account = call.account
    list_ids = p_list_ids(call, "list_ids", required=True)
    assert list_ids is not None
    fields = p_array(call, "fields", required=True)
    assert fields is not None
    flat: dict[str, str] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            raise invalid_arg(f"fields[{name}] must be a string")
        flat[name] = value
    email = phone = None
    if flat.get("email", "").strip():
        email = normalise_email(flat["email"])
        if email is None:
            raise invalid_arg(f'Invalid email address "{flat["email"]}"')
    if flat.get("phone", "").strip():
        phone = normalise_phone(flat["phone"])
        if phone is None:
            raise invalid_arg(f'Invalid phone number "{flat["phone"]}"')
    if email is None and phone is None:
        raise invalid_arg("fields[email] or fields[phone] is required")
    user_values: dict[int, str] = {}
    for name, value in flat.items():
        if name in ("email", "phone"):
            continue
        fld = account.fields_by_name.get(name)
        if fld is None:
            raise invalid_arg(f'Unknown field name "{name}"')
        user_values[fld.id] = value
    raw_tags = p_str(call, "tags")
    tag_names = split_tags(raw_tags) if raw_tags is not None else None
    if tag_names is not None and len(tag_names) > cfg.max_tags:
        raise invalid_arg(f"At most {cfg.max_tags} tags per contact")
    double_optin = p_flag(call, "double_optin", allowed=(0, 1, 3, 4))
    overwrite = p_flag(call, "overwrite", allowed=(0, 1, 2))

    contact = account.find(email, phone)
    needs_letter = double_optin == 0 or (
        double_optin == 4 and (contact is None or contact.status not in ("new", "active"))
    )
    if needs_letter and not cfg.lists_have_confirmation_letters:
        ids = ",".join(map(str, list_ids))
        raise ApiError("unspecified", f'These list ids="{ids}" has no confirmation letters')
    now = call.now
    if contact is None:
        contact = new_contact(call, email, phone, "invited" if needs_letter else "new")
    else:
        if email and contact.email is None:
            contact.email = email
            account.contacts_by_email[email] = contact
        if needs_letter and contact.status in ("new", "inactive"):
            contact.status = "invited"

    if overwrite == 1:
        contact.fields = dict(user_values)
    elif overwrite == 2:
        contact.fields.update(user_values)
    else:
        for fid, value in user_values.items():
            contact.fields.setdefault(fid, value)
    if tag_names is not None or overwrite == 1:
        ids_ = [account.tag_id(t) for t in tag_names or []]
        if overwrite in (1, 2):
            contact.tags = ids_
        else:
            contact.tags.extend(t for t in ids_ if t not in contact.tags)
    if overwrite == 1:
        for list_id in [lid for lid in contact.lists if lid not in list_ids]:
            leave_list(account, contact, list_id)
    for list_id in list_ids:
        current = contact.lists.get(list_id)
        if current is not None:
            continue  # existing memberships keep their status: an unsubscribe is never undone here
        join_list(account, contact, list_id, "invited" if needs_letter else "active", now)
        if not needs_letter:
            call.list_event("subscribe", contact, list_id)
    return {"person_id": contact.person_id}


# --- lists, fields, tags ------------------------------------------------------------------------------


def get_lists(call: Call) -> list[dict[str, Any]]:
    """getLists."""
    return [
        {"id": lst.id, "title": lst.title} for lst in sorted(call.account.lists.values(), key=lambda x: x.id)
    ]


def _unique_title(call: Call, title: str, except_id: int | None = None) -> None:
    for lst in call.account.lists.values():
        if lst.title == title and lst.id != except_id:
            raise invalid_arg(f'List with title "{title}" already exists')


def create_list(call: Call) -> dict[str, Any]:
    """createList(title) → {id}; titles are unique per account."""
    title = (p_str(call, "title", required=True) or "").strip()
    if not title:
        raise invalid_arg('Missing required argument "title"')
    _unique_title(call, title)
    lst = MailList(
        id=call.state.new_list_id(),
        title=title,
        before_subscribe_url=p_str(call, "before_subscribe_url") or "",
        after_subscribe_url=p_str(call, "after_subscribe_url") or "",
    )
    call.account.lists[lst.id] = lst
    return {"id": lst.id}


def _list(call: Call) -> MailList:
    list_id = p_int(call, "list_id", required=True)
    assert list_id is not None
    lst = call.account.lists.get(list_id)
    if lst is None:
        raise invalid_arg(f"List with id={list_id} not found")
    return lst


def update_list(call: Call) -> dict[str, Any]:
    """updateList(list_id, title?, urls?)."""
    lst = _list(call)
    title = p_str(call, "title")
    if title is not None:
        title = title.strip()
        if not title:
            raise invalid_arg('Argument "title" must not be empty')
        _unique_title(call, title, lst.id)
        lst.title = title
    for attr in ("before_subscribe_url", "after_subscribe_url"):
        value = p_str(call, attr)
        if value is not None:
            setattr(lst, attr, value)
    return {}


def delete_list(call: Call) -> dict[str, Any]:
    """deleteList(list_id): memberships go too (via the member index, no account scan)."""
    lst = _list(call)
    for pid in lst.members:
        contact = call.account.contacts_by_id.get(pid)
        if contact is not None:
            contact.lists.pop(lst.id, None)
    del call.account.lists[lst.id]
    return {}


def _field_json(fld: Field) -> dict[str, Any]:
    return {
        "id": fld.id,
        "name": fld.name,
        "public_name": fld.public_name,
        "type": fld.type,
        "is_visible": fld.is_visible,
        "view_pos": fld.view_pos,
    }


def get_fields(call: Call) -> list[dict[str, Any]]:
    """getFields."""
    return [_field_json(f) for f in sorted(call.account.fields.values(), key=lambda f: f.id)]


def _check_field_name(call: Call, name: str, except_id: int | None = None) -> None:
    cfg = call.state.config
    pattern = _FIELD_NAME_HYPHEN_RE if cfg.field_name_allow_hyphen else _FIELD_NAME_RE
    if not pattern.match(name):
        raise invalid_arg(
            f'Invalid field name "{name}": Latin letters, digits and "_" only, starting with a letter'
        )
    if cfg.reject_system_field_names and name.lower() in SYSTEM_FIELDS:
        raise invalid_arg(f'Field name "{name}" is reserved')
    existing = call.account.fields_by_name.get(name)
    if existing is not None and existing.id != except_id:
        raise invalid_arg(f'Field "{name}" already exists')


def create_field(call: Call) -> dict[str, Any]:
    """createField(name, type, public_name?) → {id}."""
    name = p_str(call, "name", required=True) or ""
    kind = p_str(call, "type", required=True) or ""
    if kind not in FIELD_TYPES:
        raise invalid_arg(f'Invalid field type "{kind}"; expected one of {", ".join(sorted(FIELD_TYPES))}')
    _check_field_name(call, name)
    account = call.account
    fld = Field(
        id=account.next_field_id, name=name, public_name=p_str(call, "public_name") or name, type=kind
    )
    account.next_field_id += 1
    account.fields[fld.id] = fld
    account.fields_by_name[name] = fld
    return {"id": fld.id}


def _field(call: Call) -> Field:
    fid = p_int(call, "id", required=True)
    assert fid is not None
    fld = call.account.fields.get(fid)
    if fld is None:
        raise invalid_arg(f"Field with id={fid} not found")
    return fld


def update_field(call: Call) -> dict[str, Any]:
    """updateField(id, name?, public_name?) → {id}."""
    fld = _field(call)
    name = p_str(call, "name")
    if name is not None and name != fld.name:
        _check_field_name(call, name, fld.id)
        del call.account.fields_by_name[fld.name]
        fld.name = name
        call.account.fields_by_name[name] = fld
    public_name = p_str(call, "public_name")
    if public_name is not None:
        fld.public_name = public_name
    return {"id": fld.id}


def delete_field(call: Call) -> dict[str, Any]:
    """deleteField(id): the values become unreachable (they are keyed by field id)."""
    fld = _field(call)
    del call.account.fields[fld.id]
    del call.account.fields_by_name[fld.name]
    return {}


def get_tags(call: Call) -> list[dict[str, Any]]:
    """getTags."""
    return [{"id": tid, "name": name} for tid, name in sorted(call.account.tags.items())]


def delete_tag(call: Call) -> dict[str, Any]:
    """deleteTag(id)."""
    tid = p_int(call, "id", required=True)
    name = call.account.tags.pop(tid or 0, None)
    if name is None:
        raise invalid_arg(f"Tag with id={tid} not found")
    del call.account.tags_by_name[name]
    return {}


# --- hooks --------------------------------------------------------------------------------------------


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


# --- exportContacts -----------------------------------------------------------------------------------

EXPORT_SYSTEM_FIELDS = (
    "email",
    "email_status",
    "email_availability",
    "email_list_ids",
    "email_subscribe_times",
    "email_unsubscribed_list_ids",
    "email_excluded_list_ids",
    "tags",
    "phone",
    "phone_status",
    "phone_availability",
)


def _export_columns(call: Call) -> list[str]:
    arr = p_array(call, "field_names")
    if arr is None:
        return ["email", "email_status", "email_availability", "email_list_ids", "tags"] + [
            f.name for f in sorted(call.account.fields.values(), key=lambda f: f.id)
        ]
    columns: list[str] = []
    for value in arr.values():
        if isinstance(value, dict):
            raise invalid_arg("field_names must be a flat array of field names")
        if value not in EXPORT_SYSTEM_FIELDS and value not in call.account.fields_by_name:
            raise invalid_arg(f'Unknown field name "{value}" in field_names')
        columns.append(value)
    if not columns:
        raise invalid_arg("field_names is empty")
    return columns


def _export_cell(account: Account, contact: Contact, column: str) -> str:
    active = [lid for lid, m in contact.lists.items() if m.status != "unsubscribed"]
    unsubscribed = [lid for lid, m in contact.lists.items() if m.status == "unsubscribed"]
    simple: dict[str, Callable[[], str]] = {
        "email": lambda: contact.email or "",
        "email_status": lambda: contact.status if contact.email else "",
        "email_availability": lambda: contact.availability if contact.email else "",
        "email_list_ids": lambda: ",".join(map(str, active)),
        "email_subscribe_times": lambda: ",".join(contact.lists[lid].added_at for lid in active),
        "email_unsubscribed_list_ids": lambda: ",".join(map(str, unsubscribed)),
        "email_excluded_list_ids": lambda: "",
        "tags": lambda: ",".join(account.tag_names(contact)),
        "phone": lambda: contact.phone or "",
        "phone_status": lambda: contact.phone_status if contact.phone else "",
        "phone_availability": lambda: contact.phone_availability if contact.phone else "",
    }
    getter = simple.get(column)
    if getter is not None:
        return getter()
    return contact.fields.get(account.fields_by_name[column].id, "")


def _export_rows(call: Call, columns: list[str], offset: int, limit: int | None) -> list[list[str]]:
    """Matching contacts (filters: list_id, email, phone, tag, email_status, phone_status), in creation order."""
    account = call.account
    list_id = p_int(call, "list_id")
    if list_id is not None and list_id not in account.lists:
        raise invalid_arg(f"List with id={list_id} not found")
    email = p_str(call, "email")
    phone = p_str(call, "phone")
    tag = p_str(call, "tag")
    email_status = p_str(call, "email_status")
    phone_status = p_str(call, "phone_status")
    if email:
        one = account.contacts_by_email.get(email.strip().lower())
        candidates: list[Contact] = [one] if one else []
    elif phone:
        key = normalise_phone(phone)
        one = account.contacts_by_phone.get(key) if key else None
        candidates = [one] if one else []
    elif list_id is not None:
        members = account.lists[list_id].members
        candidates = [account.contacts_by_id[pid] for pid in sorted(members)]
    else:
        candidates = list(account.contacts_by_id.values())
    tag_id = account.tags_by_name.get(tag) if tag else None
    rows: list[list[str]] = []
    skipped = 0
    for contact in candidates:
        if list_id is not None and list_id not in contact.lists:
            continue
        if tag and (tag_id is None or tag_id not in contact.tags):
            continue
        if email_status and (contact.email is None or contact.status != email_status):
            continue
        if phone_status and (contact.phone is None or contact.phone_status != phone_status):
            continue
        if skipped < offset:
            skipped += 1
            continue
        if limit is not None and len(rows) >= limit:
            break
        rows.append([_export_cell(account, contact, c) for c in columns])
    return rows


def export_contacts(call: Call) -> dict[str, Any]:
    """Legacy synchronous exportContacts(offset, limit ≤ 1000) → {field_names, data}."""
    columns = _export_columns(call)
    offset = p_int(call, "offset", default=0)
    limit = p_int(call, "limit", default=1000)
    assert offset is not None
    assert limit is not None
    if offset < 0 or not 1 <= limit <= 1000:
        raise invalid_arg("offset must be >= 0 and limit between 1 and 1000")
    return {"field_names": columns, "data": _export_rows(call, columns, offset, limit)}


def export_contacts_async(call: Call) -> dict[str, Any]:
    """async/exportContacts: snapshot now into a CSV file; poll async/getTaskResult for its URL."""
    notify_url = p_str(call, "notify_url", required=True)
    if not re.match(r"^https?://[^\s/]+", notify_url or ""):
        raise invalid_arg(f'Invalid notify_url "{notify_url}"')
    columns = _export_columns(call)
    rows = _export_rows(call, columns, 0, None)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    task_uuid = str(uuid.uuid4())
    call.state.exports[task_uuid] = {
        "api_key": call.account.api_key,
        "status": "new",
        "csv": buffer.getvalue(),
        "file_to_download": f"{call.base_url}/_sandbox/exports/{task_uuid}.csv",
    }
    return {"task_uuid": task_uuid, "status": "new"}


def get_task_result(call: Call) -> dict[str, Any]:
    """async/getTaskResult: ``new`` at creation, ``completed`` from the first poll on."""
    task_uuid = p_str(call, "task_uuid", required=True) or ""
    task = call.state.exports.get(task_uuid)
    if task is None or task["api_key"] != call.account.api_key:
        raise invalid_arg(f'Task "{task_uuid}" not found')
    task["status"] = "completed"
    return {
        "task_uuid": task_uuid,
        "status": "completed",
        "task_type": "export",
        "file_to_download": task["file_to_download"],
    }


METHODS: dict[str, Callable[[Call], Any]] = {
    "importContacts": import_contacts,
    "getContact": get_contact,
    "isContactInLists": is_contact_in_lists,
    "getContactCount": get_contact_count,
    "getTotalContactsCount": get_total_contacts_count,
    "subscribe": subscribe,
    "exclude": exclude,
    "unsubscribe": unsubscribe,
    "getLists": get_lists,
    "createList": create_list,
    "updateList": update_list,
    "deleteList": delete_list,
    "getFields": get_fields,
    "createField": create_field,
    "updateField": update_field,
    "deleteField": delete_field,
    "getTags": get_tags,
    "deleteTag": delete_tag,
    "setHook": set_hook,
    "removeHook": remove_hook,
    "exportContacts": export_contacts,
    "async/exportContacts": export_contacts_async,
    "async/getTaskResult": get_task_result,
}
