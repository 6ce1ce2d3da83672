"""``contactsync rotate-keys``: re-encrypt every ``EncryptedString`` value under the first configured key.

Key rotation: put the new key first in ``CONTACTSYNC_SECRET_KEYS`` (``NEW,OLD``) on every process, run
``rotate-keys`` until it reports nothing left, then remove the old key. The columns are found in the models'
metadata, so a new encrypted column is covered without touching this module.

Each batch of rows (by primary key) is one transaction that locks its rows (``FOR UPDATE`` on PostgreSQL) and
writes each value back only if it is still the one read (compare-and-set): a value the running service
rewrites meanwhile is never replaced by an older one. A value already under the first key is skipped, so a
second run, or a run after an interrupted one, only does what is left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, ColumnElement, MetaData, Table, Text, and_, select, tuple_, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.session import Database, create_engine
from app.security.crypto import Cipher, DecryptionError, EncryptedString

DEFAULT_BATCH_SIZE = 500


@dataclass
class ColumnCount:
    """One encrypted column's values (NULLs are not counted)."""

    table: str
    column: str
    current: int = 0  # already under the first key
    rotated: int = 0  # re-encrypted by this run (or, in a dry run, that would be)
    changed: int = 0  # rewritten by someone else between our read and our write: left as they wrote it
    unreadable: list[str] = field(default_factory=list)  # primary keys of values no configured key opens


@dataclass
class RotationReport:
    columns: list[ColumnCount]
    batches: int = 0
    complete: bool = True  # False when stopped by ``max_batches``

    @property
    def rotated(self) -> int:
        return sum(c.rotated for c in self.columns)

    @property
    def changed(self) -> int:
        return sum(c.changed for c in self.columns)

    @property
    def unreadable(self) -> int:
        return sum(len(c.unreadable) for c in self.columns)


def encrypted_columns(metadata: MetaData) -> list[tuple[Table, list[Column[Any]]]]:
    """Every table with ``EncryptedString`` columns, in dependency order, with those columns."""
    found = []
    for table in metadata.sorted_tables:
        columns = [c for c in table.columns if isinstance(c.type, EncryptedString)]
        if columns:
            found.append((table, columns))
    return found


def _raw(column: Column[Any]) -> ColumnElement[str]:
    # The stored ciphertext as text: no decryption on read, no encryption of the value we write.
    return type_coerce(column, Text())


def _after(pk: Sequence[Column[Any]], last: Sequence[Any]) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = pk[0] > last[0] if len(pk) == 1 else tuple_(*pk) > tuple_(*last)
    return condition


async def _rotate_value(
    session: AsyncSession,
    cipher: Cipher,
    table: Table,
    key: tuple[Any, ...],
    column: Column[Any],
    value: str,
    count: ColumnCount,
    dry_run: bool,
) -> None:
    if cipher.is_current(value):
        count.current += 1
        return
    try:
        rotated = cipher.rotate(value)
    except DecryptionError:
        count.unreadable.append(",".join(str(k) for k in key))
        return
    if dry_run:
        count.rotated += 1
        return
    pk = table.primary_key.columns
    result = await session.execute(
        update(table)
        # Compare-and-set: a value rewritten since we read it stays as its writer left it.
        .where(and_(*(c == k for c, k in zip(pk, key, strict=True))), _raw(column) == value)
        .values({column.name: type_coerce(rotated, Text())})
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        count.rotated += 1
    else:
        count.changed += 1


async def rotate_keys(
    db: Database,
    cipher: Cipher,
    metadata: MetaData,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    max_batches: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> RotationReport:
    tables = encrypted_columns(metadata)
    report = RotationReport(columns=[ColumnCount(t.name, c.name) for t, cols in tables for c in cols])
    counts = {(c.table, c.column): c for c in report.columns}
    for table, columns in tables:
        pk = list(table.primary_key.columns)
        last: Sequence[Any] | None = None
        scanned = 0
        while True:
            if max_batches is not None and report.batches >= max_batches:
                report.complete = False
                return report
            async with db.session_scope() as session:
                stmt = select(*pk, *(_raw(c) for c in columns)).order_by(*pk).limit(batch_size)
                if last is not None:
                    stmt = stmt.where(_after(pk, last))
                if not dry_run:
                    # Held until the batch commits: a concurrent write of one of these rows waits for us, and
                    # we read the value it replaces only after it committed (never rotate a stale one).
                    stmt = stmt.with_for_update()
                rows = (await session.execute(stmt)).all()
                for row in rows:
                    key = tuple(row[: len(pk)])
                    for column, value in zip(columns, row[len(pk) :], strict=True):
                        if value is not None:
                            count = counts[(table.name, column.name)]
                            await _rotate_value(session, cipher, table, key, column, value, count, dry_run)
            if not rows:
                break
            report.batches += 1
            scanned += len(rows)
            last = tuple(rows[-1][: len(pk)])
            done = sum(counts[(table.name, c.name)].rotated for c in columns)
            verb = "to re-encrypt" if dry_run else "re-encrypted"
            progress(f"{table.name}: {scanned} rows scanned, {done} values {verb}")
    return report


async def run_rotate_keys(
    settings: Settings,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    max_batches: int | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """The command: rotate, print progress and a summary; exit status 1 if some value is unreadable."""
    from app.db import models  # noqa: F401  (registers every table in the metadata)
    from app.db.base import Base
    from app.db.schema import check_schema_current

    keys = settings.encryption_keys()
    if len(keys) == 1:
        out(
            "rotate-keys: one key configured; values under another key cannot be read (they are listed below)"
        )
    db = Database(create_engine(settings.require_database_url(), pool_size=1))
    try:
        await check_schema_current(db.engine)
        report = await rotate_keys(
            db,
            Cipher(keys),
            Base.metadata,
            batch_size=batch_size,
            dry_run=dry_run,
            max_batches=max_batches,
            progress=lambda line: out(f"rotate-keys: {line}"),
        )
    finally:
        await db.dispose()
    for c in report.columns:
        out(
            f"rotate-keys: {c.table}.{c.column}: {c.rotated} {'to re-encrypt' if dry_run else 're-encrypted'}, "
            f"{c.current} already under the first key, {c.changed} changed meanwhile, "
            f"{len(c.unreadable)} unreadable"
            + (f" (primary keys: {', '.join(c.unreadable[:20])})" if c.unreadable else "")
        )
    if not report.complete:
        out(f"rotate-keys: stopped after {report.batches} batches; run it again to continue")
    elif dry_run:
        out(f"rotate-keys: dry run: {report.rotated} values to re-encrypt, nothing written")
    elif report.changed:
        out(f"rotate-keys: {report.changed} values were rewritten while rotating; run it again to check them")
    elif not report.unreadable:
        out(
            f"rotate-keys: done: {report.rotated} values re-encrypted; every value is under the first key, "
            "so the other keys can be removed from CONTACTSYNC_SECRET_KEYS once every process runs with it first"
        )
    if report.unreadable:
        out(
            f"rotate-keys: {report.unreadable} values cannot be decrypted with any configured key (left as they "
            "are; the service cannot read them either)"
        )
        return 1
    return 0
