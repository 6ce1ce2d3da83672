"""Exports: the legacy synchronous exportContacts, and the async task pair async/exportContacts +
async/getTaskResult (the CSV file is served by the control API)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable
from typing import Any

from sandbox.unisender.methods.call import Call, invalid_arg, p_array, p_int, p_str
from sandbox.unisender.methods.records import normalise_phone
from sandbox.unisender.state import Account, Contact

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
