"""Exports: the legacy synchronous exportContacts, and async/exportContacts (a task: see ``methods.tasks``;
the CSV file is served by the control API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.unisender.methods.call import Call, invalid_arg, p_array, p_int, p_str
from sandbox.unisender.methods.records import normalise_phone
from sandbox.unisender.methods.tasks import new_task, notify_url_param
from sandbox.unisender.state import Account, Contact

# Selzy's list (truncated in our copy) plus the sandbox's additions (spec §11); request/confirm ips and
# confirm times are always empty here.
EXPORT_SYSTEM_FIELDS = (
    "id",
    "email",
    "email_status",
    "email_availability",
    "email_list_ids",
    "email_subscribe_times",
    "email_unsubscribed_list_ids",
    "email_excluded_list_ids",
    "email_add_time",
    "email_request_ip",
    "email_confirm_time",
    "email_confirm_ip",
    "email_last_delivered_at",
    "email_last_read_at",
    "email_last_clicked_at",
    "tags",
    "phone",
    "phone_status",
    "phone_availability",
    "phone_list_ids",
)


def _export_columns(call: Call, *, all_by_default: bool = False) -> list[str]:
    arr = p_array(call, "field_names")
    if arr is None:
        # Legacy sync: a handful of system fields; async (documented "omitted → all fields"): every one.
        system = (
            list(EXPORT_SYSTEM_FIELDS)
            if all_by_default
            else ["email", "email_status", "email_availability", "email_list_ids", "tags"]
        )
        return system + [f.name for f in sorted(call.account.fields.values(), key=lambda f: f.id)]
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
        "id": lambda: str(contact.person_id),
        "email": lambda: contact.email or "",
        "email_status": lambda: contact.status if contact.email else "",
        "email_availability": lambda: contact.availability if contact.email else "",
        "email_list_ids": lambda: ",".join(map(str, active)),
        "email_subscribe_times": lambda: ",".join(contact.lists[lid].added_at for lid in active),
        "email_unsubscribed_list_ids": lambda: ",".join(map(str, unsubscribed)),
        "email_excluded_list_ids": lambda: "",
        "email_add_time": lambda: contact.added_at if contact.email else "",
        "email_request_ip": lambda: "",
        "email_confirm_time": lambda: "",
        "email_confirm_ip": lambda: "",
        "email_last_delivered_at": lambda: contact.activity.get("last_delivery_datetime", ""),
        "email_last_read_at": lambda: contact.activity.get("last_read_datetime", ""),
        "email_last_clicked_at": lambda: contact.activity.get("last_click_datetime", ""),
        "tags": lambda: ",".join(account.tag_names(contact)),
        "phone": lambda: contact.phone or "",
        "phone_status": lambda: contact.phone_status if contact.phone else "",
        "phone_availability": lambda: contact.phone_availability if contact.phone else "",
        # The sandbox keeps one membership per list for both channels.
        "phone_list_ids": lambda: ",".join(map(str, active)) if contact.phone else "",
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
    notify_url = notify_url_param(call)
    columns = _export_columns(call, all_by_default=True)
    rows = _export_rows(call, columns, 0, None)
    return new_task(call, "export", columns, rows, notify_url)
