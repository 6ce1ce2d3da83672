"""importContacts: bulk upsert/delete of up to ``max_import_rows`` rows, with a per-row log.

A call-level problem (columns, row count) refuses the whole call with ``invalid_arg``; a row-level problem skips
that row with a log entry and the rest of the call goes on (``import_row``). Every row applied is written to
the account's ledger, which the control API reads back (duplicate imports, differing data).
"""

from __future__ import annotations

from typing import Any

from sandbox.unisender.config import UnisenderSandboxConfig
from sandbox.unisender.methods.call import Call, invalid_arg, p_array, p_flag
from sandbox.unisender.methods.import_row import ImportOptions, ImportRow, RowRejected, import_row
from sandbox.unisender.methods.records import normalise_email, normalise_phone
from sandbox.unisender.state import SYSTEM_FIELDS

LIST_COLUMNS = (
    "email_list_ids",
    "email_unsubscribed_list_ids",
    "email_excluded_list_ids",
    "phone_list_ids",
    "phone_unsubscribed_list_ids",
    "phone_excluded_list_ids",
)


class _Log:
    """The answer's ``log``: ``{"index", "code", "message"}`` per skipped row or warning."""

    def __init__(self, config: UnisenderSandboxConfig) -> None:
        self.config = config
        self.entries: list[dict[str, Any]] = []

    def add(self, index: str, code_key: str, message: str) -> None:
        """Log ``code_key`` (mapped through ``log_codes``) for row ``index``."""
        as_string = self.config.log_index_as_string
        self.entries.append(
            {
                "index": index if as_string else int(index) if index.isdigit() else index,
                "code": self.config.log_codes.get(code_key, code_key),
                "message": message,
            }
        )


def import_contacts(call: Call) -> dict[str, Any]:
    """importContacts: bulk upsert/delete with a per-row log."""
    columns = _columns(call)
    data = _data(call)
    options = ImportOptions(
        overwrite_tags=p_flag(call, "overwrite_tags") == 1,
        overwrite_lists=p_flag(call, "overwrite_lists") == 1,
        has_list_columns=any(c in columns.values() for c in LIST_COLUMNS),
    )
    # Legacy arguments (double_optin, force_import) are accepted and ignored, like any unknown argument.
    account = call.account
    counters = {"total": len(data), "inserted": 0, "updated": 0, "deleted": 0, "new_emails": 0, "invalid": 0}
    log = _Log(call.state.config)
    call_no = account.import_calls = account.import_calls + 1
    seen: set[str] = set()
    for item in _rows(data, columns):
        if isinstance(item, tuple):
            log.add(item[0], "invalid_value", item[1])
            counters["invalid"] += 1
            continue
        try:
            applied = import_row(call, item, seen, options)
        except RowRejected as rejected:
            log.add(item.index, rejected.code_key, rejected.message)
            if rejected.code_key != "duplicate":
                counters["invalid"] += 1
            continue
        if applied.status_denied is not None:
            log.add(item.index, "status_change_denied", applied.status_denied)
        outcome = applied.counter
        counters[outcome] += 1
        email = normalise_email(item.values["email"]) if item.values.get("email", "").strip() else None
        phone = normalise_phone(item.values["phone"]) if item.values.get("phone", "").strip() else None
        contact = account.find(email, None) if email else None
        if outcome != "deleted" and contact is not None and contact.status == "new":
            counters["new_emails"] += 1
        _record(call, call_no, item, email, phone, outcome, options)
    return {**counters, "log": log.entries}


# --- the call: columns and rows --------------------------------------------------------------------------


def _columns(call: Call) -> dict[str, str]:
    """``field_names`` by position key: unique, with email or phone, known fields, within the user-field cap."""
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
    return columns


def _data(call: Call) -> dict[str, Any]:
    """``data``: not empty, at most ``max_import_rows`` rows."""
    cfg = call.state.config
    data = p_array(call, "data", required=True)
    assert data is not None
    if not data:
        raise invalid_arg("data is empty")
    if len(data) > cfg.max_import_rows:
        raise invalid_arg(f"Too many rows in data: {len(data)}, at most {cfg.max_import_rows} per call")
    return data


def _rows(data: dict[str, Any], columns: dict[str, str]) -> list[ImportRow | tuple[str, str]]:
    """Each row as ``{field name: cell}`` (a missing cell is ""), or ``(index, why)`` when it is malformed."""
    rows: list[ImportRow | tuple[str, str]] = []
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
        rows.append((index, "Cell values must be strings") if bad else ImportRow(index, values))
    return rows


def _record(
    call: Call,
    call_no: int,
    row: ImportRow,
    email: str | None,
    phone: str | None,
    outcome: str,
    options: ImportOptions,
) -> None:
    """Append an applied row to the account's ledger."""
    account = call.account
    seq = len(account.ledger)
    account.ledger.append(
        {
            "seq": seq,
            "call": call_no,
            "index": row.index,
            "at": call.now,
            "email": email,
            "phone": phone,
            "op": "delete" if outcome == "deleted" else "upsert",
            "outcome": outcome,
            "data": dict(row.values),
            "overwrite_tags": int(options.overwrite_tags),
            "overwrite_lists": int(options.overwrite_lists),
        }
    )
    account.ledger_by_email[email or phone or ""].append(seq)
