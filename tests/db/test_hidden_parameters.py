"""A failing statement's log lines never show its parameter values (contact names, addresses).

The worker logs a failed job as arq does (``logger.exception("… failed, %s: %s", …, exc)``, the exception's
text and its traceback); the API logs an unexpected database error with its traceback. Both print the
SQLAlchemy exception, which lists the bound parameters unless the engine hides them, and the driver's own
message, which quotes a value it could not encode.
"""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.api.errors import render_exception
from app.config import Settings
from app.db.session import Database, create_engine
from app.logging import configure_logging

MARKER = "Marker-Person-4711"


async def _failure(db: Database, sql: str, value: object) -> DBAPIError:
    async with db.session_scope() as session:
        await session.execute(text("CREATE TEMP TABLE person (name TEXT CHECK (name NOT LIKE 'Marker%'))"))
        try:
            await session.execute(text(sql), {"v": value})
        except DBAPIError as exc:
            return exc
    raise AssertionError("the statement did not fail")


def _log_like_the_worker_and_the_api(exc: DBAPIError) -> None:
    logging.getLogger("arq.worker").exception("%6.2fs ! %s failed, %s: %s", 0.1, "job:full_sync", "X", exc)
    try:
        raise exc
    except DBAPIError as raised:
        render_exception(raised)  # the API's handler: logs non-data database errors with their traceback


@pytest.mark.parametrize(
    ("sql", "value"),
    [
        # PostgreSQL refuses the row; the statement's parameters would be listed by SQLAlchemy.
        ("INSERT INTO person (name) VALUES (:v)", f"{MARKER} <mary@example.com>"),
        # PostgreSQL refuses the text (NUL); same.
        ("INSERT INTO person (name) VALUES (:v)", f"{MARKER}\x00"),
        # The driver cannot encode the value (a lone surrogate) and quotes it in its own message.
        ("INSERT INTO person (name) VALUES (:v)", f"{MARKER}\ud800"),
    ],
    ids=["check-violation", "nul", "unencodable"],
)
async def test_no_parameter_value_in_the_log_of_a_failing_statement(
    settings: Settings, capsys: pytest.CaptureFixture[str], sql: str, value: object
) -> None:
    configure_logging(fmt="json", level="INFO", force=True)
    db = Database(create_engine(settings.require_database_url(), pool_size=1))
    try:
        exc = await _failure(db, sql, value)
    finally:
        await db.dispose()
    capsys.readouterr()
    _log_like_the_worker_and_the_api(exc)
    err = capsys.readouterr().err
    assert "job:full_sync failed" in err  # the worker's line was written
    assert "INSERT INTO person" in err  # with the statement (which carries no values)
    assert MARKER not in err, err
    assert MARKER not in str(exc)
