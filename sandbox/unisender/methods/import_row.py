"""One importContacts row: read and check its cells, then apply them to the contact (or delete it).

The checks run in a fixed order before anything changes, so a rejected row leaves the account as it was; the
first failing check names the log code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sandbox.unisender.config import UnisenderSandboxConfig
from sandbox.unisender.methods.call import Call, parse_ids
from sandbox.unisender.methods.records import (
    join_list,
    leave_list,
    new_contact,
    normalise_email,
    normalise_phone,
    parse_time,
    split_tags,
)
from sandbox.unisender.state import SYSTEM_FIELDS, Account, Contact

EMAIL_STATUSES_IMPORTABLE = frozenset({"new", "active", "inactive", "unsubscribed"})
AVAILABILITIES = frozenset(
    {"available", "unreachable", "temp_unreachable", "mailbox_full", "spam_rejected", "spam_folder"}
)
# Field-type value rules of createField's doc page (checked only in strict mode, see the config).
_NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?$")
_DATE_SHAPES = (
    (re.compile(r"^\d{2}\.\d{2}\.\d{4}$"), "%d.%m.%Y"),
    (re.compile(r"^\d{2}-\d{2}-\d{4}$"), "%d-%m-%Y"),
    (re.compile(r"^\d{4}\.\d{2}\.\d{2}$"), "%Y.%m.%d"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "%Y-%m-%d"),
)
_BOOL_VALUES = frozenset({"1", "0", "yes", "no", "да", "нет"})
_TYPE_HINTS = {
    "number": "an integer or a decimal with a point",
    "date": "DD.MM.YYYY, DD-MM-YYYY, YYYY.MM.DD or YYYY-MM-DD",
    "bool": "1/0, yes/no or да/нет",
    "string": "one line",
}


@dataclass
class ImportRow:
    """A well-formed row: its key in ``data`` and its cells by field name."""

    index: str
    values: dict[str, str]


@dataclass(frozen=True)
class ImportOptions:
    """The call's switches every row follows."""

    overwrite_tags: bool
    overwrite_lists: bool
    has_list_columns: bool  # overwrite_lists only replaces memberships when the call carries a list column


class RowRejected(Exception):
    """The row is skipped: ``code_key`` (a ``log_codes`` key) and the log message."""

    def __init__(self, code_key: str, message: str) -> None:
        super().__init__(message)
        self.code_key = code_key
        self.message = message


@dataclass(frozen=True)
class RowApplied:
    """The counter the row lands in (inserted, updated, deleted)."""

    counter: str
    status_denied: str | None = None  # why the row's status change was refused (logged as a warning)


def import_row(call: Call, row: ImportRow, seen: set[str], options: ImportOptions) -> RowApplied:
    """Check one row, then apply it; raises RowRejected, before any change, to skip it.

    ``seen`` holds the emails and phones of the call's earlier rows: a repeat is skipped as a duplicate.
    """
    cfg = call.state.config
    email, phone = _row_keys(row.values)
    for key in (email, phone):
        if key is not None and key in seen:
            raise RowRejected("duplicate", f'"{key}" already occurs in an earlier row of this call')
    delete = _row_delete(row.values)
    existing = _owner(call.account, email, phone)
    seen.update(key for key in (email, phone) if key is not None)

    if delete:
        if existing is not None:
            call.account.remove_contact(existing)
        return RowApplied("deleted")

    if email is not None and cfg.reject_role_addresses and email.split("@", 1)[0] in cfg.role_local_parts:
        raise RowRejected("role_address", f'Role address "{email}" is not imported')
    changes = _row_changes(call, row.values)
    if cfg.validate_field_values:
        _check_field_values(call.account, row.values)
    denied = _status_change_denied(cfg, existing, changes.status, email or phone)
    if denied is not None and cfg.status_change_denied_skips_row:
        raise RowRejected("status_change_denied", denied)

    if existing is None:
        contact, outcome = _insert(call, email, phone, changes), "inserted"
    else:
        contact, outcome = existing, "updated"
        _update(call, contact, email, phone, changes, keep_status=denied is not None)
    if changes.availability:
        contact.availability = changes.availability
    _apply_fields(call.account, contact, row.values)
    _apply_tags(call.account, contact, changes.tag_names, options.overwrite_tags)
    _apply_lists(call, contact, changes, options)
    # A denied status change on an applied row is a warning: the rest of the row went through.
    return RowApplied(outcome, denied)


# --- reading the row -------------------------------------------------------------------------------------


@dataclass
class _RowChanges:
    """What a row asks of its contact, every cell already checked."""

    status: str
    phone_status: str
    availability: str
    list_ids: list[int]
    unsub_ids: list[int]
    excl_ids: list[int]
    times: list[str]  # subscribe times, in list_ids order (may be fewer: the rest join "now")
    tag_names: list[str] | None  # None: the row has no tags column


def _row_keys(values: dict[str, str]) -> tuple[str | None, str | None]:
    """The row's normalised email and phone; at least one, each valid when given."""
    raw_email = values.get("email", "").strip()
    raw_phone = values.get("phone", "").strip()
    email = phone = None
    if raw_email:
        email = normalise_email(raw_email)
        if email is None:
            raise RowRejected("invalid_email", f'Invalid email address "{raw_email}"')
    if raw_phone:
        phone = normalise_phone(raw_phone)
        if phone is None:
            raise RowRejected("invalid_phone", f'Invalid phone number "{raw_phone}"')
    if email is None and phone is None:
        raise RowRejected("invalid_email", "Row has neither an email address nor a phone number")
    return email, phone


def _row_delete(values: dict[str, str]) -> bool:
    """The ``delete`` cell: "1" deletes, "0" or empty upserts."""
    delete_raw = values.get("delete", "").strip()
    if delete_raw not in ("", "0", "1"):
        raise RowRejected("invalid_value", f'Invalid value "{delete_raw}" in column delete (use 0 or 1)')
    return delete_raw == "1"


def _owner(account: Account, email: str | None, phone: str | None) -> Contact | None:
    """The existing contact the row updates: its address's owner when it has an address, else its phone's.

    The row's phone then goes to that contact, so it may not belong to another one that has an address of
    its own (a phone-only contact gains the address instead): such a row is skipped, as Unisender refuses
    it, rather than changing a contact the row's address does not own.
    """
    by_email = account.contacts_by_email.get(email) if email else None
    by_phone = account.contacts_by_phone.get(phone) if phone else None
    if email is None or by_phone is None or by_phone is by_email:
        return by_email if email is not None else by_phone
    if by_email is None and by_phone.email is None:
        return by_phone
    if by_email is None:
        message = f"Phone {phone} already belongs to a different subscriber"
    else:
        message = f"Contacts {email} and {phone} already exist but owned by different subscribers"
    raise RowRejected("owned_by_different", message)


def _row_changes(call: Call, values: dict[str, str]) -> _RowChanges:
    """Statuses, list ids (of existing lists), subscribe times and tags of the row, each checked."""
    cfg = call.state.config
    status = values.get("email_status", "").strip()
    if status and status not in EMAIL_STATUSES_IMPORTABLE:
        raise RowRejected("invalid_value", f'Invalid email_status "{status}"')
    phone_status = values.get("phone_status", "").strip()
    if phone_status and phone_status not in EMAIL_STATUSES_IMPORTABLE:
        raise RowRejected("invalid_value", f'Invalid phone_status "{phone_status}"')
    availability = values.get("email_availability", "").strip()
    if availability and availability not in AVAILABILITIES:
        raise RowRejected("invalid_value", f'Invalid email_availability "{availability}"')

    list_ids = _row_ids(values, "email_list_ids") + _row_ids(values, "phone_list_ids")
    unsub_ids = _row_ids(values, "email_unsubscribed_list_ids") + _row_ids(
        values, "phone_unsubscribed_list_ids"
    )
    excl_ids = _row_ids(values, "email_excluded_list_ids") + _row_ids(values, "phone_excluded_list_ids")
    for list_id in (*list_ids, *unsub_ids, *excl_ids):
        if list_id not in call.account.lists:
            raise RowRejected("invalid_list", f"List with id={list_id} not found")
    times = _row_times(values)
    tag_names = split_tags(values["tags"]) if "tags" in values else None
    if tag_names is not None and len(tag_names) > cfg.max_tags:
        raise RowRejected("too_many_tags", f"At most {cfg.max_tags} tags per contact")
    return _RowChanges(status, phone_status, availability, list_ids, unsub_ids, excl_ids, times, tag_names)


def _check_field_values(account: Account, values: dict[str, str]) -> None:
    """Strict mode: every non-empty user-field value fits its field's type (an empty cell clears)."""
    for name, value in values.items():
        if name in SYSTEM_FIELDS or value == "":
            continue
        kind = account.fields_by_name[name].type
        if not _fits(kind, value):
            raise RowRejected(
                "invalid_field_value",
                f'Invalid value "{value}" for field {name} of type {kind}: use {_TYPE_HINTS[kind]}',
            )


def _fits(kind: str, value: str) -> bool:
    """Whether ``value`` is a valid value of a field of type ``kind`` (text, and unknown types: anything)."""
    if kind == "number":
        return _NUMBER_RE.match(value) is not None
    if kind == "date":
        for shape, fmt in _DATE_SHAPES:
            if shape.match(value):
                try:
                    datetime.strptime(value, fmt)
                except ValueError:
                    return False  # the right shape but no such day (31.02.2024)
                return True
        return False
    if kind == "bool":
        return value.strip().lower() in _BOOL_VALUES
    if kind == "string":
        return "\n" not in value and "\r" not in value
    return True


def _row_ids(values: dict[str, str], column: str) -> list[int]:
    raw = values.get(column)
    if not raw:
        return []
    try:
        return parse_ids(raw)
    except ValueError:
        raise RowRejected("invalid_value", f'Invalid list ids "{raw}" in column {column}') from None


def _row_times(values: dict[str, str]) -> list[str]:
    """``email_subscribe_times`` then ``phone_subscribe_times``, each as many as its list ids column."""
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
            raise RowRejected("invalid_value", f"{column} must have as many entries as {ids_column}")
        for part in parts:
            parsed = parse_time(part)
            if parsed is None:
                raise RowRejected("invalid_value", f'Invalid time "{part.strip()}" in {column}')
            times.append(parsed)
    return times


def _status_change_denied(
    cfg: UnisenderSandboxConfig, existing: Contact | None, status: str, key: str | None
) -> str | None:
    """Why the row may not move an existing contact to ``status`` (None: it may).

    Unisender's docs: the status of an existing address can only be changed while it is active or inactive
    (``mutable_statuses``); an unsubscribed or invited address keeps its status.
    """
    if existing is None or not status or status == existing.status:
        return None
    if existing.status in cfg.mutable_statuses:
        return None
    return f'Status of "{key}" is "{existing.status}" and cannot be changed to "{status}"'


# --- applying a row --------------------------------------------------------------------------------------


def _insert(call: Call, email: str | None, phone: str | None, changes: _RowChanges) -> Contact:
    """A new contact: status ``new`` unless the row gives one."""
    contact = new_contact(call, email, phone, changes.status or "new")
    if changes.phone_status:
        contact.phone_status = changes.phone_status
    return contact


def _update(
    call: Call,
    contact: Contact,
    email: str | None,
    phone: str | None,
    changes: _RowChanges,
    *,
    keep_status: bool,
) -> None:
    """An existing contact: a missing channel is added; the row's status applies unless ``keep_status`` (a
    denied change), and an unsubscribe made this way is notified like one made in Unisender."""
    cfg = call.state.config
    account = call.account
    if email and contact.email is None:
        contact.email = email
        account.contacts_by_email[email] = contact
    if phone and contact.phone != phone:
        # The row's phone replaces the contact's (``_owner`` made sure no other contact holds it).
        if contact.phone:
            account.contacts_by_phone.pop(contact.phone, None)
        contact.phone = phone
        account.contacts_by_phone[phone] = contact
    status = changes.status
    if not keep_status and status and status != contact.status:
        contact.status = status
        if status == "unsubscribed" and cfg.notify_api_unsubscribes:
            call.account_unsubscribe(contact)
    if changes.phone_status and contact.phone_status in cfg.mutable_statuses:
        contact.phone_status = changes.phone_status


def _apply_fields(account: Account, contact: Contact, values: dict[str, str]) -> None:
    """User-field cells: a value sets the field, an empty cell clears it."""
    for name, value in values.items():
        if name in SYSTEM_FIELDS:
            continue
        fid = account.fields_by_name[name].id
        if value == "":
            contact.fields.pop(fid, None)
        else:
            contact.fields[fid] = value


def _apply_tags(account: Account, contact: Contact, tag_names: list[str] | None, overwrite: bool) -> None:
    """The tags cell: replaces the contact's tags with ``overwrite_tags=1``, otherwise adds the new ones."""
    if tag_names is None:
        return
    ids = [account.tag_id(t) for t in tag_names]
    if overwrite:
        contact.tags = ids
    else:
        contact.tags.extend(t for t in ids if t not in contact.tags)


def _apply_lists(call: Call, contact: Contact, changes: _RowChanges, options: ImportOptions) -> None:
    """Memberships: join ``list_ids``, unsubscribe from ``unsub_ids``, leave ``excl_ids``.

    A list named in two columns of the row takes the strongest: excluded, then unsubscribed, then joined, and
    the weaker columns do nothing to it (no join before an exclusion, no unsubscribe event for it).
    ``overwrite_lists=1`` first drops the memberships the row does not name. An unsubscribed membership is
    never turned back into an active one, and only a transition to unsubscribed is an event.
    """
    cfg = call.state.config
    account = call.account
    excluded = set(changes.excl_ids)
    unsubscribed = [lid for lid in dict.fromkeys(changes.unsub_ids) if lid not in excluded]
    overruled = excluded | set(unsubscribed)  # a stronger column claims these: no join
    if options.overwrite_lists and options.has_list_columns:
        keep = set(changes.list_ids) | set(changes.unsub_ids)
        for list_id in [lid for lid in contact.lists if lid not in keep]:
            leave_list(account, contact, list_id)
    for pos, list_id in enumerate(changes.list_ids):
        if list_id in overruled:
            continue
        added_at = changes.times[pos] if pos < len(changes.times) else call.now
        current = contact.lists.get(list_id)
        if current is None:
            join_list(account, contact, list_id, "active", added_at)
        elif current.status == "unsubscribed":
            continue  # never turns an unsubscribe back into active
        elif pos < len(changes.times):
            current.added_at = added_at
    for list_id in unsubscribed:
        current = contact.lists.get(list_id)
        if current is not None and current.status == "unsubscribed":
            continue
        join_list(account, contact, list_id, "unsubscribed", current.added_at if current else call.now)
        # Only a transition is an event: a membership created already unsubscribed notifies nobody.
        if current is not None and cfg.notify_api_unsubscribes:
            call.list_event("unsubscribe", contact, list_id)
    for list_id in excluded:
        leave_list(account, contact, list_id)  # not a member: nothing to do
