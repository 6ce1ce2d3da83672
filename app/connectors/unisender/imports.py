"""importContacts on the wire: which rows travel together and with which columns, their PHP bracket-array
arguments, and each call's ``log`` mapped back onto the rows that were sent."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from app.connectors.base import ImportRow, RowOutcome, RowResult
from app.connectors.unisender.schemas import ImportResult

log = structlog.get_logger(__name__)

Params = list[tuple[str, str]]

MAX_IMPORT_FIELDS = 50  # documented cap on user fields per importContacts call

# importContacts' system columns (Unisender's docs). A user field cannot be named like one (createField
# refuses it), and a row naming one in ``fields`` would repeat or hijack a column, so such a row is refused.
SYSTEM_COLUMNS = frozenset(
    {
        "email",
        "email_status",
        "email_availability",
        "email_list_ids",
        "email_subscribe_times",
        "email_unsubscribed_list_ids",
        "email_excluded_list_ids",
        "tags",
        "delete",
        "phone",
        "phone_status",
        "phone_availability",
        "phone_list_ids",
        "phone_subscribe_times",
        "phone_unsubscribed_list_ids",
        "phone_excluded_list_ids",
    }
)


def ids_param(ids: Sequence[int]) -> str:
    return _ids_text(tuple(ids))


@functools.lru_cache(maxsize=4096)
def _ids_text(ids: tuple[int, ...]) -> str:
    # Cached: the rows of one account name the same few combinations of lists, batch after batch.
    return ",".join(str(int(i)) for i in ids)


@dataclass(frozen=True, slots=True)
class RowShape:
    """What splits rows into separate calls: the user fields a live row sets (an empty cell clears a field,
    so no row may get one it did not ask for) and whether it sets ``email_status`` (an empty status cell is
    undocumented). The phone and the list columns do not split: an empty cell there gives no phone and no
    list, as in Unisender's own CSV imports, where a row may leave the phone or the lists blank."""

    fields: frozenset[str]
    status: bool


# The code of a row this client rejects itself, without a call (see ``row_problem``).
INVALID_FIELD_NAME = "invalid_field_name"


def row_problem(row: ImportRow) -> str | None:
    """Why the row's field names cannot be columns (a name given twice, empty, or a system column), or None."""
    names = [name for name, _ in row.fields]
    unique = set(names)
    if len(unique) == len(names) and "" not in unique and unique.isdisjoint(SYSTEM_COLUMNS):
        return None  # the usual row, told in one pass (this runs for every row of every batch)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"field {repeated[0]!r} is given more than once"
    bad = sorted(n for n in names if not n or n in SYSTEM_COLUMNS)
    if bad:
        return f"{bad[0]!r} is not a user-field name (it is empty or an importContacts system column)"
    return None


def row_shape(row: ImportRow) -> RowShape:
    """The row's columns; raises ValueError for a row with a ``row_problem``."""
    problem = row_problem(row)
    if problem is not None:
        raise ValueError(f"import row {row.email!r}: {problem}")
    return RowShape(fields=frozenset(name for name, _ in row.fields), status=row.unsubscribed)


def import_groups(rows: Sequence[ImportRow]) -> list[list[int]]:
    """Partition input indices into groups whose rows need the same columns (each group in input order).

    An empty field cell is not "leave unchanged" in Unisender (it clears the field), so a row never gets a
    field column only because another row needed it: rows are grouped by ``RowShape``. Deletions carry only
    the address and ride along with the largest group (``delete=0`` is a plain upsert). Rows with a
    ``row_problem`` are in no group: they cannot be sent.
    """
    groups: dict[RowShape, list[int]] = {}
    deletes: list[int] = []
    for i, row in enumerate(rows):
        if row_problem(row) is not None:
            continue
        if row.delete:
            deletes.append(i)
        else:
            groups.setdefault(row_shape(row), []).append(i)
    ordered = list(groups.values())
    if deletes:
        if ordered:
            largest = max(ordered, key=len)
            largest.extend(deletes)
            largest.sort()
        else:
            ordered.append(deletes)
    return ordered


def import_columns(rows: Sequence[ImportRow]) -> list[str]:
    """The importContacts columns of one batch: ``email`` plus what its rows set, ``delete`` if any row is
    deleted. The live rows must all need the same columns (``import_groups``); raises ValueError otherwise."""
    live = [row for row in rows if not row.delete]
    shapes = {row_shape(row) for row in live}
    if len(shapes) > 1:
        raise ValueError("rows of one importContacts call must need the same columns (see import_groups)")
    columns = ["email"]
    if live:
        shape = shapes.pop()
        columns.extend(name for name, _ in live[0].fields)  # the caller's order, the same set in every row
        # Blank in the rows that set none (see RowShape).
        if any(row.phone for row in live):
            columns.append("phone")
        if any(row.list_ids for row in live):
            columns.append("email_list_ids")
        if any(row.excluded_list_ids for row in live):
            columns.append("email_excluded_list_ids")
        if any(row.unsubscribed_list_ids for row in live):
            columns.append("email_unsubscribed_list_ids")
        if shape.status:
            columns.append("email_status")
    if any(row.delete for row in rows):
        columns.append("delete")
    return columns


def column_calls(columns: Sequence[str], max_fields: int = MAX_IMPORT_FIELDS) -> list[list[str]]:
    """The calls one batch's columns take: one, unless it has more than ``max_fields`` user fields.

    Then the first call carries every system column (address, phone, lists, status, delete) and the first
    ``max_fields`` user fields, and each further call ``email`` with the next ``max_fields``. Only rows the
    first calls applied go on to the next (see ``UnisenderClient.import_contacts``).
    """
    user = [c for c in columns if c not in SYSTEM_COLUMNS]
    if len(user) <= max_fields:
        return [list(columns)]
    first_fields = set(user[:max_fields])
    first = [c for c in columns if c in SYSTEM_COLUMNS or c in first_fields]
    rest = [
        ["email", *user[start : start + max_fields]] for start in range(max_fields, len(user), max_fields)
    ]
    return [first, *rest]


def _cell(row: ImportRow, column: str, fields: dict[str, str]) -> str:
    if column == "email":
        return row.email
    if column == "delete":
        return "1" if row.delete else "0"
    if row.delete:
        return ""  # a deleted row carries nothing but its address
    if column == "phone":
        return row.phone
    if column == "email_list_ids":
        return ids_param(row.list_ids)
    if column == "email_excluded_list_ids":
        return ids_param(row.excluded_list_ids)
    if column == "email_unsubscribed_list_ids":
        return ids_param(row.unsubscribed_list_ids)
    if column == "email_status":
        # Only ever "unsubscribed": this client never raises an address's status (see ImportRow).
        return "unsubscribed" if row.unsubscribed else ""
    if column in SYSTEM_COLUMNS:
        raise ValueError(f"import column {column!r} is not one this client sends")
    if column in fields:
        return fields[column]
    # An empty cell would clear the field in Unisender: never send one the row did not ask for.
    raise ValueError(f"import row {row.email!r} does not set field {column!r}")


def build_import_params(rows: Sequence[ImportRow], columns: Sequence[str] | None = None) -> Params:
    """importContacts arguments for one batch in PHP bracket notation (``field_names[0]``, ``data[0][0]``);
    ``columns`` defaults to ``import_columns(rows)``."""
    if columns is None:
        columns = import_columns(rows)
    params: Params = [(f"field_names[{j}]", name) for j, name in enumerate(columns)]
    for i, row in enumerate(rows):
        fields = dict(row.fields)
        params.extend((f"data[{i}][{j}]", _cell(row, column, fields)) for j, column in enumerate(columns))
    return params


def row_results(result: ImportResult, input_indices: Sequence[int]) -> dict[int, RowResult]:
    """Map one batch's ``log`` back onto input indices: error entries reject a row, the rest are OK."""
    rejected: dict[int, RowResult] = {}
    for entry in result.log:
        if entry.index is None or not 0 <= entry.index < len(input_indices):
            log.warning("unisender.import_log_unmapped", index=entry.index, code=entry.code)
            continue
        target = input_indices[entry.index]
        if not entry.is_error:
            log.info("unisender.import_warning", row=target, code=entry.code, message=entry.message)
            continue
        # Several entries for one row: the first error explains it.
        rejected.setdefault(
            target,
            RowResult(
                index=target,
                outcome=RowOutcome.REJECTED,
                code=entry.code or "unspecified",
                message=entry.message or None,
            ),
        )
    return {idx: rejected.get(idx, RowResult(index=idx, outcome=RowOutcome.OK)) for idx in input_indices}
