"""``contactsync status``: what the service and its queues are doing, read from PostgreSQL and Redis: both
reachable, the schema's revision, the arq queue, the work waiting in every queue table and since when."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from arq.connections import ArqRedis

from app.commands.shared import (
    age,
    open_database,
    open_queue,
    out,
    out_json,
    reason,
    service_settings,
    since,
    table,
)
from app.config import Settings
from app.db.base import utcnow
from app.db.session import Database
from app.sync.backlog_repo import Backlog, PendingWork

PROBE_TIMEOUT = 3.0  # per probe: a status that hangs on a silent server tells nothing
IN_PROGRESS_PREFIX = "arq:in-progress:"  # arq's, per job id

_T = TypeVar("_T")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="what the service and its queues are doing: PostgreSQL, Redis, schema, queue depth, backlog",
        description="Reachability of PostgreSQL and Redis, the schema's revision, the arq queue (jobs ready, "
        "in progress, deferred; the last worker health check), the work waiting in PostgreSQL (webhook "
        "events, outbox rows, activity, CRM writes, signups, active runs) and the age of the oldest. Exit 1 "
        "when a server is unreachable or the schema is not at head.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object, for machines")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    settings = service_settings(redis=True)
    if settings is None:
        return 2
    report = asyncio.run(collect(settings))
    if args.json:
        out_json(report)
    else:
        for line in render(report):
            out(line)
    return 0 if healthy(report) else 1


def healthy(report: dict[str, Any]) -> bool:
    return bool(report["database"]["ok"] and report["database"].get("at_head") and report["redis"]["ok"])


@dataclass(frozen=True, slots=True)
class _Probed(Generic[_T]):
    """What a probe read, or why it could not (never a DSN or a secret)."""

    value: _T | None = None
    reason: str | None = None

    def state(self) -> dict[str, Any]:
        return {"ok": True} if self.reason is None else {"ok": False, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class _DatabaseRead:
    revision: str | None
    head: str | None
    work: PendingWork


async def collect(settings: Settings) -> dict[str, Any]:
    """The whole report as plain JSON values (ages in seconds, None where nothing waits or nothing could be
    read)."""
    async with open_database(settings) as db, open_queue(settings) as queue:
        database, redis = await asyncio.gather(
            _probe(lambda: _database(db, settings)), _probe(lambda: _queue(queue))
        )
    now = utcnow()
    report: dict[str, Any] = {
        "database": database.state(),
        "redis": redis.state(),
        "queue": redis.value,
        "pending": None,
        "runs": None,
        "oldest_pending_age_s": None,
    }
    if database.value is None:
        return report
    read = database.value
    report["database"] |= {
        "revision": read.revision,
        "head": read.head,
        "at_head": read.revision == read.head,
    }
    work = read.work
    report["pending"] = {
        "webhook_events": {source: _backlog(b, now) for source, b in work.events.items()},
        "outbox": _backlog(work.outbox, now) | {"due": work.outbox_due},
        "activity": _backlog(work.activity, now),
        "crm_writes": _backlog(work.crm_writes, now),
        "signups": _backlog(work.signups, now),
    }
    report["runs"] = {
        "active": sum(work.runs.values()),
        "by_kind": work.runs,
        "oldest_age_s": _age(work.oldest_run_at, now),
    }
    waits = [*work.events.values(), work.outbox, work.activity, work.crm_writes, work.signups]
    report["oldest_pending_age_s"] = max(
        (a for a in (_age(b.oldest_at, now) for b in waits) if a is not None), default=None
    )
    return report


def _backlog(backlog: Backlog, now: datetime) -> dict[str, Any]:
    return {"count": backlog.count, "oldest_age_s": _age(backlog.oldest_at, now)}


def _age(at: datetime | None, now: datetime) -> float | None:
    seconds = since(at, now)
    return None if seconds is None else round(max(0.0, seconds), 3)


async def _probe(probe: Callable[[], Awaitable[_T]]) -> _Probed[_T]:
    try:
        return _Probed(await asyncio.wait_for(probe(), timeout=PROBE_TIMEOUT))
    except TimeoutError:
        return _Probed(reason=f"no answer within {PROBE_TIMEOUT:.0f} s")
    except Exception as exc:
        return _Probed(reason=reason(exc))


async def _database(db: Database, settings: Settings) -> _DatabaseRead:
    from app.db.schema import current_revision, head_revision
    from app.sync import backlog_repo

    revision = await current_revision(db.engine)
    head = head_revision()
    async with db.session_scope() as session:
        work = await backlog_repo.pending_work(session)
    return _DatabaseRead(revision, head, work)


async def _queue(queue: ArqRedis) -> dict[str, Any]:
    """The arq queues' depth, from the sorted sets of job ids (score: when each is due): the live queue's at
    the top, the bulk queue's under ``bulk``."""
    from app.queue import BULK_HEALTH_KEY, BULK_QUEUE_NAME, HEALTH_KEY, QUEUE_NAME

    # A job stays in the queue's sorted set while it runs; a finished cron job's in-progress key lingers a
    # minute but its id has left the set, so only ids still in the set count.
    started = [key[len(IN_PROGRESS_PREFIX) :] async for key in _keys(queue, IN_PROGRESS_PREFIX + "*")]
    live = await _depth(queue, QUEUE_NAME, HEALTH_KEY, started)
    return {**live, "bulk": await _depth(queue, BULK_QUEUE_NAME, BULK_HEALTH_KEY, started)}


async def _depth(queue: ArqRedis, name: str, health_key: str, started: list[str]) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    total = int(await queue.zcard(name))
    due = int(await queue.zcount(name, "-inf", now_ms))
    running = 0
    if started:
        scores = await queue.zmscore(name, started)
        running = sum(score is not None for score in scores)
    health = await queue.get(health_key)
    return {
        "name": name,
        "length": total,
        "ready": max(0, due - running),
        "in_progress": running,
        "deferred": total - due,
        "worker_health": health.decode() if isinstance(health, bytes) else health,
    }


async def _keys(queue: ArqRedis, pattern: str) -> AsyncIterator[str]:
    async for key in queue.scan_iter(match=pattern, count=500):
        yield key.decode() if isinstance(key, bytes) else str(key)


def render(report: dict[str, Any]) -> list[str]:
    """The report as aligned lines for a terminal."""
    rows: list[list[str]] = []
    db = report["database"]
    if db["ok"]:
        schema = (
            "at head" if db["at_head"] else f"behind: code expects {db['head']} (run contactsync migrate)"
        )
        rows.append(["database", f"ok: schema {db['revision'] or 'empty'}, {schema}"])
    else:
        rows.append(["database", f"UNREACHABLE: {db['reason']}"])
    redis = report["redis"]
    rows.append(["redis", "ok" if redis["ok"] else f"UNREACHABLE: {redis['reason']}"])
    queue = report["queue"]
    if queue is not None:
        for label, q in (("", queue), ("bulk ", queue["bulk"])):
            rows.append(
                [
                    f"arq {label}queue",
                    f"{q['length']} jobs: {q['ready']} ready, {q['in_progress']} in progress, "
                    f"{q['deferred']} deferred",
                ]
            )
            rows.append(
                [
                    f"{label}worker",
                    f"last health check: {q['worker_health']}"
                    if q["worker_health"]
                    else "no health check in the last 16 s (no worker running?)",
                ]
            )
    pending = report["pending"]
    if pending is not None:
        for source, backlog in pending["webhook_events"].items():
            rows.append([f"{source} events", _waiting(backlog)])
        outbox = pending["outbox"]
        rows.append(["outbox", _waiting(outbox) + (f" ({outbox['due']} due now)" if outbox["count"] else "")])
        for name, label in (("activity", "activity"), ("crm_writes", "crm writes"), ("signups", "signups")):
            rows.append([label, _waiting(pending[name])])
        runs = report["runs"]
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(runs["by_kind"].items()))
        rows.append(
            [
                "runs",
                f"{runs['active']} active"
                + (f" ({kinds}), oldest {age(runs['oldest_age_s'])}" if kinds else ""),
            ]
        )
        rows.append(["oldest pending", age(report["oldest_pending_age_s"])])
    return table(["", ""], rows)[1:]


def _waiting(backlog: dict[str, Any]) -> str:
    if not backlog["count"]:
        return "0 pending"
    return f"{backlog['count']} pending, oldest {age(backlog['oldest_age_s'])}"
