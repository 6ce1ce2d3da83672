"""``contactsync accounts``: every account's state in a table, from the views behind ``GET /accounts``."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.accounts.schemas import AccountView
from app.commands.shared import (
    age,
    clip,
    fail,
    open_database,
    out,
    out_json,
    reason,
    service_settings,
    short_time,
    since,
    table,
)
from app.config import Settings
from app.db.base import utcnow

HEADERS = (
    "ID",
    "HOST",
    "STATUS",
    "UNISENDER",
    "TOKEN EXPIRES",
    "PENDING",
    "EVENTS",
    "REJECTED",
    "LAG",
    "LAST ERROR",
)
ERROR_WIDTH = 60


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "accounts",
        help="list the accounts: connection, Unisender, token expiry, queues, lag, last error",
        description="Every account as GET /accounts shows it, one line each. PENDING: addresses waiting to "
        "be pushed to Unisender; EVENTS: webhook events not applied yet; REJECTED: addresses Unisender "
        "refused; LAG: how long the oldest of those pending has waited (- when nothing waits). Times are UTC. Reads the "
        "service's PostgreSQL (CONTACTSYNC_DATABASE_URL).",
    )
    p.add_argument("--json", action="store_true", help="the full views as JSON, with lag_s, for machines")
    p.set_defaults(func=cmd_accounts)


def cmd_accounts(args: argparse.Namespace) -> int:
    settings = service_settings(redis=False)
    if settings is None:
        return 2
    try:
        views, oldest = asyncio.run(_read(settings))
    except (OSError, SQLAlchemyError) as exc:
        fail(f"cannot read the database: {reason(exc)}")
        return 1
    now = utcnow()
    if args.json:
        out_json([_json_row(view, since(oldest.get(view.account_id), now)) for view in views])
        return 0
    if not views:
        out("no accounts (register one with POST /integration)")
        return 0
    for line in table(HEADERS, [_row(view, since(oldest.get(view.account_id), now), now) for view in views]):
        out(line)
    return 0


async def _read(settings: Settings) -> tuple[list[AccountView], dict[int, datetime]]:
    from app.accounts import views as account_views
    from app.sync import backlog_repo

    async with open_database(settings) as db, db.session_scope() as session:
        views = await account_views.list_accounts(session=session)
        oldest = await backlog_repo.oldest_pending(session, [v.account_id for v in views])
    return views, oldest


def _row(view: AccountView, lag: float | None, now: datetime) -> list[str]:
    expires = view.kommo.token_expires_at
    token = short_time(expires) + (" (expired)" if expires is not None and expires <= now else "")
    return [
        str(view.account_id),
        view.host or f"{view.subdomain} (no host yet)",
        view.status.value,
        "yes" if view.unisender.connected else "no",
        token,
        str(view.outbox.pending),
        str(view.events_pending),
        str(view.outbox.rejected),
        age(lag),
        clip(view.last_error, ERROR_WIDTH),
    ]


def _json_row(view: AccountView, lag: float | None) -> dict[str, Any]:
    return view.model_dump(mode="json") | {"lag_s": None if lag is None else round(lag, 3)}
