"""Webhook intake's own pieces: the inbox statement, the token-hash cache, coalesced wake-ups."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert

from app.accounts.webhook_auth import WebhookAuth
from app.config import Settings
from app.context import ProcessContext
from app.db.models import WebhookEvent
from app.db.session import Database, create_engine
from app.db.states import EventSource
from app.errors import Unauthorized
from app.queue.enqueue import WakeUps
from app.security.tokens import hash_token
from app.sync import inbox_repo
from app.sync.inbox_repo import NewEvent
from app.sync.ingest import InboxWriter
from tests.conftest import raw_sql

COLUMNS = "account_id, source, dedupe_key, body, status, attempts, last_error, handled_at"


async def _store(db: Database, key: str) -> int | None:
    """Store one body; its id, None when the same delivery was stored before."""
    event = NewEvent(account_id=7, source=EventSource.KOMMO, dedupe_key=key, body="a=1&b=ü")
    stored = await db.run_autocommit(lambda conn: inbox_repo.store_events(conn, [event]))
    return stored.get(key)


async def test_postgres_fast_insert_stores_what_the_orm_statement_stores(ctx: ProcessContext) -> None:
    """Intake runs hand-written SQL on the driver: it stores what the model's own INSERT stores."""
    first = await _store(ctx.db, "k1")
    assert isinstance(first, int)
    assert await _store(ctx.db, "k1") is None  # the same delivery again: not stored twice
    url = ctx.settings.database_url
    assert url
    [pg_row] = await raw_sql(url, f"SELECT {COLUMNS}, received_at FROM webhook_event WHERE id = $1", first)

    async with ctx.db.session_scope() as session:
        conn = await session.connection()
        result = await conn.execute(
            insert(WebhookEvent)
            .values(
                account_id=bindparam("account_id"),
                source=bindparam("source"),
                dedupe_key=bindparam("dedupe_key"),
                body=bindparam("body"),
                status="pending",
                attempts=0,
                received_at=bindparam("received_at"),
            )
            .returning(WebhookEvent.id),
            {
                "account_id": 7,
                "source": "kommo",
                "dedupe_key": "k2",
                "body": "a=1&b=ü",
                "received_at": pg_row[8],
            },
        )
        orm_id = result.scalar_one()
    [orm_row] = await raw_sql(url, f"SELECT {COLUMNS}, received_at FROM webhook_event WHERE id = $1", orm_id)
    assert dict(pg_row) | {"dedupe_key": "k2"} == dict(orm_row)


async def test_run_autocommit_retries_once_on_a_dead_connection(ctx: ProcessContext) -> None:
    """A connection killed behind the pool's back (a PostgreSQL restart) costs a retry, not an error."""
    db = Database(create_engine(ctx.settings.require_database_url(), pool_size=1, pre_ping=False))
    try:
        async with db.autocommit() as conn:
            pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        url = ctx.settings.database_url
        assert url
        await raw_sql(url, "SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        assert isinstance(await _store(db, "after-restart"), int)
        async with db.autocommit() as conn:
            assert (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        await db.dispose()


async def test_token_hash_cache(ctx: ProcessContext, settings: Settings) -> None:
    url = settings.database_url
    assert url
    await raw_sql(
        url,
        "INSERT INTO integration (account_id, subdomain, client_id, client_secret, redirect_uri, webhook_token,"
        " webhook_token_hash, status, created_at, updated_at) VALUES (42, 'acme', 'c', 'x', 'http://x', 'x', $1,"
        " 'connected', now(), now())",
        hash_token("right"),
    )
    auth = WebhookAuth(ttl=60)
    await auth.verify(ctx.db, 42, "right")
    for bad in ("wrong", None, ""):
        with pytest.raises(Unauthorized):
            await auth.verify(ctx.db, 42, bad)
    with pytest.raises(Unauthorized):
        await auth.verify(ctx.db, 43, "right")  # unknown account: the same answer

    # Rotated in the database: the cached hash holds until forgotten (or the TTL ends), then the new one rules.
    await raw_sql(
        url, "UPDATE integration SET webhook_token_hash = $1 WHERE account_id = 42", hash_token("new")
    )
    await auth.verify(ctx.db, 42, "right")
    auth.forget(42)
    await auth.verify(ctx.db, 42, "new")
    with pytest.raises(Unauthorized):
        await auth.verify(ctx.db, 42, "right")

    short = WebhookAuth(ttl=0.05, max_entries=2)
    await short.verify(ctx.db, 42, "new")
    await raw_sql(
        url, "UPDATE integration SET webhook_token_hash = $1 WHERE account_id = 42", hash_token("newer")
    )
    await asyncio.sleep(0.1)
    await short.verify(ctx.db, 42, "newer")
    for account_id in (1, 2, 3):
        with pytest.raises(Unauthorized):
            await short.verify(ctx.db, account_id, "x")
    assert len(short._hashes) == 2  # bounded: random account ids cannot grow it


async def test_an_account_created_after_a_refusal_is_accepted_within_a_second(ctx: ProcessContext) -> None:
    """Unknown accounts are cached for a second only: webhooks start right after the integration is created."""
    url = ctx.settings.database_url
    assert url
    auth = WebhookAuth(ttl=60)
    with pytest.raises(Unauthorized):
        await auth.verify(ctx.db, 77, "tok")
    await raw_sql(
        url,
        "INSERT INTO integration (account_id, subdomain, client_id, client_secret, redirect_uri, webhook_token,"
        " webhook_token_hash, status, created_at, updated_at) VALUES (77, 'acme', 'c', 'x', 'http://x', 'x', $1,"
        " 'connected', now(), now())",
        hash_token("tok"),
    )
    with pytest.raises(Unauthorized):
        await auth.verify(ctx.db, 77, "tok")  # still the cached refusal
    await asyncio.sleep(1.1)
    await auth.verify(ctx.db, 77, "tok")


class _RecordingQueue:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, tuple[Any, ...], str]] = []

    async def enqueue_job(
        self, function: str, *args: Any, _job_id: str, _defer_by: float | None, _queue_name: str | None = None
    ) -> None:
        assert _queue_name is None  # a wake-up is live work: the pool's own queue
        self.jobs.append((function, args, _job_id))


async def test_wakeups_coalesce_a_burst_into_one_job_per_target() -> None:
    queue = _RecordingQueue()
    wakeups = WakeUps(queue, window=0.05)  # type: ignore[arg-type]
    for _ in range(100):
        wakeups.poke("process_events", 1, "kommo")
        wakeups.poke("process_events", 2, "kommo")
    await asyncio.sleep(0.2)
    assert sorted((f, a) for f, a, _ in queue.jobs) == [
        ("process_events", (1, "kommo")),
        ("process_events", (2, "kommo")),
    ]
    assert len({job_id for _, _, job_id in queue.jobs}) == 2  # unique ids: never swallowed by an old job key
    wakeups.poke("process_events", 1, "kommo")  # a later poke sends again
    await wakeups.close()  # shutdown sends what is pending at once
    assert len(queue.jobs) == 3


async def test_wakeups_survive_a_redis_failure(ctx: ProcessContext) -> None:
    class _Broken:
        async def enqueue_job(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("redis down")

    wakeups = WakeUps(_Broken(), window=0.01)  # type: ignore[arg-type]
    wakeups.poke("process_events", 1, "kommo")
    await asyncio.sleep(0.05)
    await wakeups.close()  # logged, not raised: the sweeper finds the pending rows
    real = WakeUps(ctx.queue, window=0.01)
    real.poke("process_events", 9, "kommo")
    await asyncio.sleep(0.1)
    queued = [(j.function, j.args) for j in await ctx.queue.queued_jobs()]
    assert ("process_events", (9, "kommo")) in queued


async def test_store_events_in_one_statement(ctx: ProcessContext) -> None:
    rows = [NewEvent(7, EventSource.KOMMO, key, f"body {key}") for key in ("a", "b", "a", "c")]
    first = await ctx.db.run_autocommit(lambda conn: inbox_repo.store_events(conn, rows))
    assert sorted(first) == ["a", "b", "c"]
    again = await ctx.db.run_autocommit(
        lambda conn: inbox_repo.store_events(
            conn, [NewEvent(7, EventSource.KOMMO, k, "x") for k in ("b", "d")]
        )
    )
    assert list(again) == ["d"]
    url = ctx.settings.database_url
    assert url
    stored = await raw_sql(url, "SELECT dedupe_key, body, status FROM webhook_event ORDER BY id")
    assert [tuple(r) for r in stored] == [
        ("a", "body a", "pending"),
        ("b", "body b", "pending"),
        ("c", "body c", "pending"),
        ("d", "x", "pending"),
    ]


class _CountingWriter(InboxWriter):
    writes = 0

    async def _write(self, batch: Any) -> None:
        self.writes += 1
        await super()._write(batch)


async def test_group_commit_answers_each_caller_once_its_row_is_stored(ctx: ProcessContext) -> None:
    writer = _CountingWriter(ctx, max_batch=64)
    keys = [f"k{i % 150}" for i in range(300)]  # every key twice
    results = await asyncio.gather(*(writer.store(NewEvent(7, EventSource.KOMMO, k, k)) for k in keys))
    new_per_key: dict[str, int] = {}
    for key, new in zip(keys, results, strict=True):
        new_per_key[key] = new_per_key.get(key, 0) + int(new)
    assert set(new_per_key.values()) == {1}  # exactly one caller per body is told "new"
    url = ctx.settings.database_url
    assert url
    assert (await raw_sql(url, "SELECT count(*) AS n FROM webhook_event"))[0]["n"] == 150
    assert 300 / 64 <= writer.writes < 300  # batched: far fewer statements than requests
    await writer.close()


class _SlowWriter(InboxWriter):
    """Each write waits ``pause`` seconds before it asks for a connection (a pool that has none free)."""

    pause = 0.3

    async def _write(self, batch: Any) -> None:
        await asyncio.sleep(self.pause)
        await super()._write(batch)


class _SlowStatement(InboxWriter):
    """Each statement is answered 0.15 s after it was sent (a loaded database)."""

    def _send(self, conn: Any, batch: Any) -> Any:
        sending = super()._send(conn, batch)

        async def slow() -> Any:
            await asyncio.sleep(0.15)
            return await sending

        return slow()


async def _count(ctx: ProcessContext) -> int:
    url = ctx.settings.database_url
    assert url
    return int((await raw_sql(url, "SELECT count(*) AS n FROM webhook_event"))[0]["n"])


async def test_a_deadline_passing_during_the_statement_waits_for_its_outcome(ctx: ProcessContext) -> None:
    """A 503 must mean "not stored": a caller whose deadline passes while its row's statement is in flight and
    then commits is told the truth (stored), else the sender would deliver a deletion again and it would be
    stored twice."""
    writer = _SlowStatement(ctx)
    loop = asyncio.get_running_loop()
    assert await writer.store(NewEvent(7, EventSource.KOMMO, "late", "b"), until=loop.time() + 0.1)
    assert await _count(ctx) == 1
    await writer.close()


async def test_a_deadline_passing_before_the_statement_withdraws_the_row(ctx: ProcessContext) -> None:
    """Queued behind another write, or in a write still waiting for a connection: the caller answers at its
    deadline and its row is left out of the statement that goes later."""
    writer = _SlowWriter(ctx)
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):  # its own write waits for a connection
        await writer.store(NewEvent(7, EventSource.KOMMO, "waiting", "b"), until=loop.time() + 0.1)
    writer.pause = 0.5
    first = asyncio.create_task(writer.store(NewEvent(7, EventSource.KOMMO, "first", "b")))
    await asyncio.sleep(0.05)  # "first" is in a write now; "queued" waits for the next one
    with pytest.raises(TimeoutError):
        await writer.store(NewEvent(7, EventSource.KOMMO, "queued", "b"), until=loop.time() + 0.1)
    assert await first
    await writer.close()
    url = ctx.settings.database_url
    assert url
    rows = await raw_sql(url, "SELECT dedupe_key FROM webhook_event")
    assert [r["dedupe_key"] for r in rows] == ["first"]


async def test_a_withdrawn_duplicate_does_not_take_the_new_answer(ctx: ProcessContext) -> None:
    """The same body twice in one write, the first caller gone: the one still waiting is told "new"."""
    writer = _SlowWriter(ctx)
    loop = asyncio.get_running_loop()
    gone = asyncio.create_task(
        writer.store(NewEvent(7, EventSource.KOMMO, "same", "b"), until=loop.time() + 0.1)
    )
    staying = asyncio.create_task(writer.store(NewEvent(7, EventSource.KOMMO, "same", "b")))
    with pytest.raises(TimeoutError):
        await gone
    assert await staying is True
    assert await _count(ctx) == 1
    await writer.close()


async def test_group_commit_failure_reaches_every_waiting_caller(settings: Settings) -> None:
    from app.servers import free_port

    dead = ProcessContext.__new__(ProcessContext)
    dead.db = Database(
        create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x", pre_ping=False)
    )
    writer = InboxWriter(dead)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(writer.store(NewEvent(7, EventSource.KOMMO, f"k{i}", "b")) for i in range(20)),
                return_exceptions=True,
            ),
            timeout=30,
        )
        assert all(isinstance(r, OSError | ConnectionError) or "connect" in repr(r).lower() for r in results)
    finally:
        await dead.db.dispose()


async def test_pruning_forgets_handled_and_discarded_events_and_keeps_dead_letters(
    ctx: ProcessContext,
) -> None:
    from datetime import timedelta

    from app.db.base import utcnow

    assert ctx.settings.database_url
    old, recent = utcnow() - timedelta(days=8), utcnow() - timedelta(days=1)
    rows = [
        ("done-old", "done", old),
        ("discarded-old", "discarded", old),
        ("failed-old", "failed", old),
        ("unrecognised-old", "unrecognised", old),
        ("done-recent", "done", recent),
    ]
    for key, status, at in rows:
        await raw_sql(
            ctx.settings.database_url,
            f"INSERT INTO webhook_event ({COLUMNS}, received_at) VALUES (7, 'unisender', $1, '{{}}', $2, 1, NULL, $3, $3)",
            key,
            status,
            at,
        )
    async with ctx.db.session_scope() as session:
        pruned = await inbox_repo.prune_events(session, utcnow() - timedelta(days=7))
    assert pruned == 2
    left = await raw_sql(
        ctx.settings.database_url, "SELECT dedupe_key FROM webhook_event ORDER BY dedupe_key"
    )
    assert [r["dedupe_key"] for r in left] == ["done-recent", "failed-old", "unrecognised-old"]


async def test_a_row_is_sent_only_while_its_caller_can_still_wait_for_the_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What one statement carries and how long it may take: rows whose callers cannot wait at least the
    shortest statement are answered 503 unsent (also when a dead connection's batch is sent again), and the
    statement ends before the earliest remaining caller's answer-by time."""
    from app.sync import ingest

    sent: list[tuple[list[str], float | None]] = []

    async def capture(conn: Any, rows: Any, *, deadline: float | None = None) -> dict[str, int]:
        sent.append(([r.dedupe_key for r in rows], deadline))
        return {}

    monkeypatch.setattr(inbox_repo, "store_events", capture)
    loop = asyncio.get_running_loop()
    now = loop.time()
    writer = InboxWriter(ProcessContext.__new__(ProcessContext), deadline=1.0)

    def pending(key: str, until: float | None) -> Any:
        return ingest._Pending(NewEvent(7, EventSource.KOMMO, key, "b"), loop.create_future(), until)

    late = pending("late", now - 0.2)  # answer-by 0.1 s from now: less than the shortest statement
    soon = pending("soon", now + 0.4)  # answer-by 0.7 s from now
    open_ended = pending("free", None)
    gone = pending("gone", now + 5)
    gone.done.cancel()  # withdrew before the send
    await writer._send(None, [late, soon, open_ended, gone])  # type: ignore[arg-type]
    [(keys, deadline)] = sent
    assert keys == ["soon", "free"]
    assert deadline is not None
    assert 0.6 < deadline <= 0.7 + 1e-6
    assert soon.sent
    assert open_ended.sent
    assert not late.sent
    assert not gone.sent
    with pytest.raises(TimeoutError):
        late.done.result()
    # Sent again later (the first connection was dead): the caller that can no longer wait is not re-sent.
    monkeypatch.setattr(loop, "time", lambda: now + 0.6)
    await writer._send(None, [late, soon, open_ended, gone])  # type: ignore[arg-type]
    assert sent[-1] == (["free"], 1.0)
    with pytest.raises(TimeoutError):
        soon.done.result()
