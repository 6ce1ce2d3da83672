"""``contactsync status`` over the real PostgreSQL and Redis: reachability, schema, the arq queue and the work
waiting in every queue table, counted exactly."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

from app.config import Settings
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import CrmWrite, EmailActivity, Outbox, Signup, SyncRun, WebhookEvent
from app.db.schema import head_revision
from app.db.states import (
    ActivityState,
    CrmWriteState,
    EventSource,
    EventStatus,
    OutboxStatus,
    RunKind,
    RunStatus,
    SignupState,
)
from app.queue import BULK_QUEUE_NAME, QUEUE_NAME
from app.servers import free_port
from tests.commands.conftest import Cli, add_connected


def _ago(seconds: float) -> object:
    return utcnow() - timedelta(seconds=seconds)


def _event(n: int, source: EventSource, status: EventStatus, waited: float) -> WebhookEvent:
    return WebhookEvent(
        account_id=7, source=source, dedupe_key=f"e{n}", body="{}", status=status, received_at=_ago(waited)
    )


def _outbox(n: int, status: OutboxStatus, *, waited: float, due: bool = True) -> Outbox:
    return Outbox(
        account_id=7,
        email=f"o{n}@example.com",
        payload={},
        payload_hash="h",
        status=status,
        updated_at=_ago(waited),
        next_attempt_at=_ago(1) if due else utcnow() + timedelta(minutes=5),
    )


async def _seed_tables(ctx: ProcessContext) -> None:
    async with ctx.db.session_scope() as session:
        await add_connected(session, 7)
        session.add_all(
            [
                _event(1, EventSource.KOMMO, EventStatus.PENDING, 20),
                _event(2, EventSource.KOMMO, EventStatus.PENDING, 400),  # the oldest wait of all
                _event(3, EventSource.KOMMO, EventStatus.DONE, 9000),
                _event(4, EventSource.UNISENDER, EventStatus.PENDING, 60),
                _outbox(1, OutboxStatus.PENDING, waited=10),
                _outbox(2, OutboxStatus.PENDING, waited=100, due=False),
                _outbox(3, OutboxStatus.PENDING, waited=50, due=False),
                _outbox(4, OutboxStatus.DONE, waited=8000),
                _outbox(5, OutboxStatus.REJECTED, waited=8000),
                EmailActivity(
                    account_id=7,
                    email="x@example.com",
                    kind="opened",
                    occurred_at=_ago(30),
                    event_key="a1",
                    state=ActivityState.PENDING,
                    created_at=_ago(30),
                ),
                EmailActivity(
                    account_id=7,
                    email="x@example.com",
                    kind="opened",
                    occurred_at=_ago(30),
                    event_key="a2",
                    state=ActivityState.NOTED,
                ),
                CrmWrite(
                    account_id=7,
                    kommo_id=1,
                    email="x@example.com",
                    source="name",
                    field_type="text",
                    target="Name",
                    value="X",
                    unisender_at=_ago(5),
                    state=CrmWriteState.PENDING,
                    created_at=_ago(5),
                ),
                Signup(account_id=7, email="s@example.com", list_id=77, state=SignupState.FAILED),
                SyncRun(
                    id="run-1", account_id=7, kind=RunKind.FULL, status=RunStatus.RUNNING, created_at=_ago(70)
                ),
                SyncRun(
                    id="run-2", account_id=7, kind=RunKind.REMAP, status=RunStatus.PENDING, created_at=_ago(3)
                ),
                SyncRun(
                    id="run-3", account_id=7, kind=RunKind.FULL, status=RunStatus.DONE, created_at=_ago(900)
                ),
            ]
        )


async def _seed_queue(ctx: ProcessContext) -> None:
    q = ctx.queue
    await q.enqueue_job("process_events", 7, "kommo", _job_id="ready-1")
    await q.enqueue_job("flush_outbox", 7, _job_id="running-1")
    await q.enqueue_job("flush_outbox", 7, _job_id="later-1", _defer_by=300)
    await q.enqueue_job("sweep", _job_id="later-2", _defer_by=600)
    # What a worker sets on the job it runs, and what a finished cron job leaves behind for a minute.
    await q.set("arq:in-progress:running-1", b"1", px=60_000)
    await q.set("arq:in-progress:cron:sweep:123", b"1", px=60_000)
    await q.set("contactsync:worker:health", b"Nov-30 21:40:01 j_complete=12 j_failed=0 queued=4", px=16_000)
    await q.enqueue_job("full_sync", "run-1", _job_id="bulk:7:sync:run-1", _queue_name=BULK_QUEUE_NAME)


async def test_status_json_counts_every_queue(
    ctx: ProcessContext, settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    await _seed_tables(ctx)
    await _seed_queue(ctx)
    assert await ctx.queue.zcard(QUEUE_NAME) == 4
    r = await cli(settings)("status", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["database"] == {
        "ok": True,
        "revision": head_revision(),
        "head": head_revision(),
        "at_head": True,
    }
    assert report["redis"] == {"ok": True}
    queue = report["queue"]
    assert {k: queue[k] for k in ("length", "ready", "in_progress", "deferred")} == {
        "length": 4,
        "ready": 1,
        "in_progress": 1,
        "deferred": 2,
    }
    assert queue["worker_health"].startswith("Nov-30 21:40:01 j_complete=12")
    bulk = queue["bulk"]
    assert (bulk["length"], bulk["ready"], bulk["worker_health"]) == (1, 1, None)
    pending = report["pending"]
    assert {s: b["count"] for s, b in pending["webhook_events"].items()} == {"kommo": 2, "unisender": 1}
    assert 400 <= pending["webhook_events"]["kommo"]["oldest_age_s"] < 430
    assert pending["outbox"]["count"] == 3
    assert pending["outbox"]["due"] == 1
    assert 100 <= pending["outbox"]["oldest_age_s"] < 130
    assert pending["activity"]["count"] == 1
    assert 30 <= pending["activity"]["oldest_age_s"] < 60
    assert pending["crm_writes"]["count"] == 1
    assert pending["signups"] == {"count": 0, "oldest_age_s": None}
    assert report["runs"]["active"] == 2
    assert report["runs"]["by_kind"] == {"full": 1, "remap": 1}
    assert 70 <= report["runs"]["oldest_age_s"] < 100
    assert 400 <= report["oldest_pending_age_s"] < 430


async def test_status_text_reads_as_lines(
    ctx: ProcessContext, settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    await _seed_tables(ctx)
    r = await cli(settings)("status")
    assert r.code == 0, r.err
    lines = {line.split("  ")[0]: " ".join(line.split()) for line in r.out.splitlines()}
    assert lines["database"].startswith("database ok: schema ")
    assert lines["database"].endswith("at head")
    assert lines["arq queue"] == "arq queue 0 jobs: 0 ready, 0 in progress, 0 deferred"
    assert lines["worker"] == "worker no health check in the last 16 s (no worker running?)"
    assert lines["kommo events"].startswith("kommo events 2 pending, oldest 6m4")
    assert lines["outbox"].startswith("outbox 3 pending, oldest 1m4")
    assert lines["outbox"].endswith("(1 due now)")
    assert lines["signups"] == "signups 0 pending"
    assert lines["runs"].startswith("runs 2 active (full 1, remap 1), oldest 1m1")


async def test_status_reports_an_unreachable_redis_and_exits_1(
    ctx: ProcessContext, settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    await _seed_tables(ctx)
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    r = await cli(settings, CONTACTSYNC_REDIS_URL=dead)("status", "--json")
    assert r.code == 1
    report = json.loads(r.out)
    assert report["redis"]["ok"] is False
    assert report["redis"]["reason"]
    assert report["queue"] is None
    assert report["database"]["ok"] is True  # the database's part is still read
    assert report["pending"]["outbox"]["count"] == 3
