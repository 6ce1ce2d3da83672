"""importContacts on the wire: which columns a batch needs, its PHP bracket-array arguments, and its ``log``
mapped back onto the rows that were sent."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from app.connectors.base import ImportRow, RowOutcome, RowResult
from app.connectors.unisender.schemas import ImportResult

log = structlog.get_logger(__name__)

Params = list[tuple[str, str]]


def ids_param(ids: Sequence[int]) -> str:
    return ",".join(str(int(i)) for i in ids)


def _signature(row: ImportRow) -> tuple[bool, bool, bool]:
    return (bool(row.name), bool(row.list_ids), row.unsubscribed)


def import_groups(rows: Sequence[ImportRow]) -> list[list[int]]:
    """Partition input indices into groups whose rows need the same columns (each group in input order).

    An empty cell is not "leave unchanged" in Unisender (an empty ``Name`` clears the name, an empty
    ``email_status`` is undocumented), so a row never gets a column only because another row needed it.
    Deletions carry only the address and ride along with the largest group (``delete=0`` is a plain upsert).
    """
    groups: dict[tuple[bool, bool, bool], list[int]] = {}
    deletes: list[int] = []
    for i, row in enumerate(rows):
        if row.delete:
            deletes.append(i)
        else:
            groups.setdefault(_signature(row), []).append(i)
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
    """The importContacts columns a batch needs: ``email`` plus only what its rows actually set."""
    columns = ["email"]
    live = [row for row in rows if not row.delete]
    if any(row.name for row in live):
        columns.append("Name")
    if any(row.list_ids for row in live):
        columns.append("email_list_ids")
    if any(row.unsubscribed for row in live):
        columns.append("email_status")
    if any(row.delete for row in rows):
        columns.append("delete")
    return columns


def _cell(row: ImportRow, column: str) -> str:
    if column == "email":
        return row.email
    if column == "delete":
        return "1" if row.delete else "0"
    if row.delete:
        return ""  # a deleted row carries nothing but its address
    if column == "Name":
        return row.name
    if column == "email_list_ids":
        return ids_param(row.list_ids)
    if column == "email_status":
        # Only ever "unsubscribed": this client never raises an address's status (see ImportRow).
        return "unsubscribed" if row.unsubscribed else ""
    raise ValueError(f"unknown import column {column!r}")


def build_import_params(rows: Sequence[ImportRow]) -> Params:
    """importContacts arguments for one batch in PHP bracket notation (``field_names[0]``, ``data[0][0]``)."""
    columns = import_columns(rows)
    params: Params = [(f"field_names[{j}]", name) for j, name in enumerate(columns)]
    for i, row in enumerate(rows):
        params.extend((f"data[{i}][{j}]", _cell(row, column)) for j, column in enumerate(columns))
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
