"""Campaign and export results of the Unisender API, read tolerantly: every shape the spec documents (and the
PHP quirks around them) becomes one typed model.

Tables come three ways: ``{"fields": [...], "data": [[...]]}`` (getCampaignDeliveryStats, getVisitedLinks),
``{"field_names": [...], "data": ...}`` (legacy exportContacts), or a task's CSV file (gzipped or not, with or
without a BOM, ``,`` ``;`` or tab separated). Rows may be lists or objects keyed by column; PHP may send a
list as an object with "0", "1"… keys; numbers may be strings; times are UTC ``YYYY-MM-DD hh:mm:ss``.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

GZIP_MAGIC = b"\x1f\x8b"
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_time(value: Any) -> datetime | None:
    """A UTC ``YYYY-MM-DD hh:mm:ss`` (or ISO with offset, or Unix seconds); None when empty or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip() or value.startswith("0000-00-00"):
        return None
    text = value.strip()
    if text.isdecimal():  # Unix seconds, as a table cell carries them
        return parse_time(int(text))
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """Unisender's argument format, in UTC (a naive datetime is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def values_of(container: Any) -> list[Any] | None:
    """A JSON list, or PHP's object rendering of one; None for anything else."""
    if isinstance(container, list):
        return container
    if isinstance(container, dict):
        return list(container.values())
    return None


def cell(value: Any) -> str:
    """A table cell as text (null → "")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | dict):
        return ",".join(cell(v) for v in values_of(value) or [])
    return str(value)


def split_ids(value: str) -> tuple[int, ...]:
    """A comma-joined id cell (``"101,102"``) as ints; unreadable parts are dropped."""
    return tuple(int(p.strip()) for p in value.split(",") if p.strip().isdecimal())


@dataclass(frozen=True, slots=True)
class Table:
    """Column names and rows of text cells, each row as long as ``columns``."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def records(self) -> list[dict[str, str]]:
        """Rows keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def table_from_result(result: Any) -> Table | None:
    """A ``{fields|field_names, data}`` result (or a list of row objects); None when it is neither."""
    if isinstance(result, dict):
        header = values_of(result.get("fields", result.get("field_names")))
        data = result.get("data")
        raw_rows = [] if data is None or data == "" else values_of(data)
        if header is None or raw_rows is None:
            return None
        return _table([cell(c) for c in header], raw_rows)
    rows = values_of(result)
    if rows is not None and all(isinstance(r, dict) for r in rows):
        columns: list[str] = []
        for row in rows:
            columns.extend(str(k) for k in row if str(k) not in columns)
        return _table(columns, rows)
    return None


def _table(columns: list[str], raw_rows: Sequence[Any]) -> Table:
    rows: list[tuple[str, ...]] = []
    width = len(columns)
    for raw in raw_rows:
        if isinstance(raw, dict) and not all(str(k).isdecimal() for k in raw):
            values = [cell(raw.get(c)) for c in columns]
        else:
            values = [cell(v) for v in values_of(raw) or [raw]]
        values = (values + [""] * width)[:width]
        rows.append(tuple(values))
    return Table(tuple(columns), tuple(rows))


def table_from_file(content: bytes) -> Table:
    """A task's CSV file; raises ValueError when it is not readable text."""
    if content[:2] == GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError("corrupt gzip file") from exc
    text = content.decode("utf-8-sig")  # UnicodeDecodeError is a ValueError
    first = text.split("\n", 1)[0]
    delimiter = ","
    if "," not in first:
        delimiter = ";" if ";" in first else "\t" if "\t" in first else ","
    lines = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
    if not lines:
        return Table((), ())
    columns = [c.strip() for c in lines[0]]
    return _table(columns, lines[1:])


# --- models -----------------------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CampaignInfo(_Lenient):
    """One getCampaigns entry."""

    id: int
    status: str | None = None
    start_time: datetime | None = None
    message_id: int | None = None
    list_id: int | None = None
    subject: str | None = None
    sender_name: str | None = None
    sender_email: str | None = None
    stats_url: str | None = None

    @field_validator("start_time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> datetime | None:
        return parse_time(value)

    @field_validator("message_id", "list_id", mode="before")
    @classmethod
    def _optional_id(cls, value: Any) -> Any:
        return None if value in ("", 0, "0") else value


class CampaignStatus(_Lenient):
    """getCampaignStatus: ``status`` plus creation and start times."""

    status: str
    creation_time: datetime | None = None
    start_time: datetime | None = None

    @field_validator("creation_time", "start_time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> datetime | None:
        return parse_time(value)


class CampaignCommonStats(_Lenient):
    """getCampaignCommonStats; ``read_unique`` counts contacts that read *or* clicked."""

    total: int = 0
    sent: int = 0
    delivered: int = 0
    read_unique: int = 0
    read_all: int = 0
    clicked_unique: int = 0
    clicked_all: int = 0
    unsubscribed: int = 0
    spam: int = 0

    @field_validator("*", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if value is None or value == "":
            return 0
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdecimal():
            return int(float(value))
        return value


@dataclass(frozen=True, slots=True)
class DeliveryStat:
    """One recipient of getCampaignDeliveryStats: its ``send_result`` and the extra (user-field) columns."""

    email: str
    send_result: str
    last_update: datetime | None
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class VisitedLink:
    """One getVisitedLinks row (``count`` is 1 per click, or the click count with ``group=1``)."""

    email: str
    url: str
    request_time: datetime | None
    ip: str | None
    count: int


@dataclass(frozen=True, slots=True)
class ExportedContacts:
    """An export file: its columns and one record per contact (lists stay comma-joined: ``split_ids``)."""

    columns: tuple[str, ...]
    contacts: list[dict[str, str]]


def delivery_stats(table: Table) -> list[DeliveryStat]:
    """Rows of a delivery-stats table; rows without an address are dropped."""
    known = {"email", "send_result", "last_update"}
    out: list[DeliveryStat] = []
    for record in table.records():
        email = record.get("email", "").strip().lower()
        if not email:
            continue
        extra = {k: v for k, v in record.items() if k not in known}
        out.append(
            DeliveryStat(email, record.get("send_result", ""), parse_time(record.get("last_update")), extra)
        )
    return out


def visited_links(table: Table) -> list[VisitedLink]:
    """Rows of a getVisitedLinks table."""
    out: list[VisitedLink] = []
    for record in table.records():
        email = record.get("email", "").strip().lower()
        if not email:
            continue
        raw_count = record.get("count", "").strip()
        count = int(raw_count) if raw_count.isdecimal() else 1
        ip = record.get("ip") or None
        out.append(
            VisitedLink(email, record.get("url", ""), parse_time(record.get("request_time")), ip, count)
        )
    return out
