"""Shared fixtures: a real PostgreSQL database per test run (migrated with alembic), real Redis, and the
service served by uvicorn on a loopback port. Tables are emptied before each test that touches them."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text

from app.collector import tune_collector
from app.config import Environment, Settings
from app.context import ProcessContext, build_context, loopback_client
from app.db.base import Base
from app.db.schema import upgrade
from app.main import create_app
from app.servers import listening_socket, serve_in_background
from tests.support.direct import direct_db

PG_ADMIN_DSN = os.environ.get("CONTACTSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _per_worker_db(url: str) -> str:
    """Parallel test processes (pytest-xdist: gw0, gw1 …) each get their own Redis database, so one's FLUSHDB
    or arq worker never touches another's queue. (Each already gets its own PostgreSQL database, below.)"""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db or 0) + int(worker[2:])}"


REDIS_URL = _per_worker_db(os.environ.get("CONTACTSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"))


_CLIENT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=2.0)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False, help="run the full-length fault tests")


def _runs_long(item: pytest.Item) -> bool:
    return "slow" in item.keywords or "/tests/faults/" in item.path.as_posix()


def _deal_long_tests_first(items: list[pytest.Item], processes: int) -> list[pytest.Item]:
    """Order the tests for xdist's worksteal scheduler (scripts/test): it hands the first half of the list to
    one process and the rest to the other (with n processes: 1/n, then 1/(n-1) of what is left …), then lets
    an idle one take the end of a busy one's queue. Each share here starts with its turn of the long tests,
    so all processes begin on them and the end of every queue is short tests, cheap to hand over. Same
    order in every process (xdist requires it); with one process, just the long tests first."""
    long = [item for item in items if _runs_long(item)]
    short = [item for item in items if not _runs_long(item)]
    ordered: list[pytest.Item] = []
    left = len(items)
    for share in range(processes):
        size = left // (processes - share)  # what worksteal gives this process
        mine = long[share::processes]
        take = max(0, size - len(mine))
        ordered += mine + short[:take]
        short = short[take:]
        left -= size
    return ordered + short


def pytest_collection_finish(session: pytest.Session) -> None:
    # The test process runs the service in-process (API, sandboxes, jobs) for minutes: the same collector
    # set-up as the service's own processes, once every test module is imported.
    tune_collector()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    items[:] = _deal_long_tests_first(items, max(processes, 1))
    if config.getoption("--long"):
        return
    skip_long = pytest.mark.skip(reason="full-length run: pass --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip_long)


def _asyncpg_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
async def pg_database() -> AsyncIterator[str]:
    """A fresh database for this test run, migrated to head; dropped at the end."""
    name = f"contactsync_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    url = _asyncpg_url(f"{base}/{name}")
    await asyncio.to_thread(upgrade, url, "head")
    direct_db.adopt(_plain_dsn(url))
    yield url
    await direct_db.release(_plain_dsn(url))
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def secret_keys() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def admin_token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def settings(pg_database: str, secret_keys: str, admin_token: str, tmp_path: Path) -> Settings:
    return Settings(
        env=Environment.TEST,
        database_url=pg_database,
        redis_url=REDIS_URL,
        secret_keys=SecretStr(secret_keys),
        admin_token=SecretStr(admin_token),
        public_url="http://127.0.0.1:1",
        log_format="json",
        state_dir=tmp_path / "state",
        _env_file=None,  # type: ignore[call-arg]
    )


async def _empty_all(url: str) -> None:
    """Empty every table and restart every sequence. DELETE, children first, not TRUNCATE: the tables of a
    test are small, and TRUNCATE replaces each table's files (60 ms for the schema's tables, against 1 ms)."""
    deletes = "; ".join(f'DELETE FROM "{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    await direct_db.execute(
        _plain_dsn(url),
        f"{deletes}; SELECT setval(c.oid, 1, false) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND n.nspname = 'public'",
    )


@pytest.fixture
async def clean_db(settings: Settings) -> str:
    """Isolation: every table emptied before the test."""
    assert settings.database_url
    await _empty_all(settings.database_url)
    return settings.database_url


@pytest.fixture
async def clean_redis() -> AsyncIterator[None]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    yield
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def ctx(settings: Settings, clean_db: str, clean_redis: None) -> AsyncIterator[ProcessContext]:
    """A process context (engine, queue, HTTP clients) like the API's or a worker's."""
    pc = await build_context(settings)
    yield pc
    await pc.close()


@pytest.fixture
async def api(settings: Settings, clean_db: str, clean_redis: None) -> AsyncIterator[httpx.AsyncClient]:
    """The service over real HTTP on a loopback port."""
    app = create_app(settings)
    async with (
        serve_in_background(app) as url,
        loopback_client(url, timeout=10, limits=_CLIENT_LIMITS) as client,
    ):
        client.app = app  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def admin_headers(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


async def raw_sql(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Read the database directly, bypassing the ORM (e.g. to see what is really stored)."""
    return await direct_db.fetch(_plain_dsn(url), sql, *args)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fresh_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CONTACTSYNC_* variables from the outer environment leak into a test."""
    for key in list(os.environ):
        if key.startswith("CONTACTSYNC_") and not key.startswith("CONTACTSYNC_TEST_"):
            monkeypatch.delenv(key)


__all__ = ["raw_sql", "text"]


# --- the whole stack: both sandboxes, the service, optionally a worker -----------------------------------


@dataclass
class Stack:
    settings: Settings
    api: httpx.AsyncClient  # the service
    kommo: httpx.AsyncClient  # Kommo sandbox (control API under /_sandbox)
    unisender: httpx.AsyncClient  # Unisender sandbox (control API under /_sandbox)
    kommo_app: Any
    unisender_app: Any
    admin_headers: dict[str, str]


@pytest.fixture
async def stack(
    settings: Settings, clean_db: str, clean_redis: None, admin_token: str
) -> AsyncIterator[Stack]:
    """Kommo and Unisender sandboxes plus the service, all on loopback ports, wired together by settings."""
    from sandbox.kommo import KommoSandboxConfig, create_kommo_sandbox
    from sandbox.unisender import UnisenderSandboxConfig, create_unisender_sandbox

    # retry_after 2 s instead of Kommo's 300: a stray 429 under CI load must not stall a test for minutes.
    # Deliveries retried for about 16 s, not Kommo's hours: a box starved for a few seconds (our intake late
    # beyond the 2-s timeout) must not lose a change that only the 5-minute reconcile would bring back.
    kommo_app = create_kommo_sandbox(
        KommoSandboxConfig(webhook_retry_delays=(0.2, 0.5, 1.0, 2.0, 4.0, 8.0), retry_after=2)
    )
    # A hook delivery our intake answered 503 (its database budget, on a loaded box) is sent again after 0.5 s,
    # not Unisender's 10 minutes, for the same reason.
    unisender_app = create_unisender_sandbox(UnisenderSandboxConfig(hook_retry_interval_seconds=0.5))
    # Bound now, served later: the app's public URL names this port, and a port only looked up free could be
    # taken before the server binds it (a sandbox started in between drew the same one: "address in use").
    api_socket = listening_socket()
    api_port = int(api_socket.getsockname()[1])
    async with (
        _closing(api_socket),  # served, the server closes it; a failed start-up before that must not leak it
        serve_in_background(kommo_app) as kommo_url,
        serve_in_background(unisender_app) as unisender_url,
    ):
        wired = settings.model_copy(
            update={
                "public_url": f"http://127.0.0.1:{api_port}",
                "kommo_base_url": kommo_url + "/{host}",
                "kommo_auth_url": kommo_url + "/oauth",
                "unisender_base_url": unisender_url,
            }
        )
        app = create_app(wired)
        async with (
            serve_in_background(app, listening=api_socket) as api_url,
            # Keep-alive shorter than uvicorn's 5 s (the sandboxes' too): with equal timeouts a client may reuse
            # a connection the server is closing at that instant (a ReadError that no real bug caused).
            loopback_client(api_url, limits=_CLIENT_LIMITS) as api,
            loopback_client(kommo_url, limits=_CLIENT_LIMITS) as kommo,
            loopback_client(unisender_url, limits=_CLIENT_LIMITS) as unisender,
        ):
            yield Stack(
                settings=wired,
                api=api,
                kommo=kommo,
                unisender=unisender,
                kommo_app=kommo_app,
                unisender_app=unisender_app,
                admin_headers={"Authorization": f"Bearer {admin_token}"},
            )


@asynccontextmanager
async def _closing(sock: socket.socket) -> AsyncIterator[None]:
    try:
        yield
    finally:
        sock.close()


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[ProcessContext]:
    """A real arq worker on real Redis, in this event loop, until the block ends."""
    from app.worker.group import cancel_and_wait
    from app.worker.settings import build_worker

    pc = await build_context(settings)
    worker = build_worker(pc, handle_signals=False)
    task = asyncio.create_task(worker.main())
    try:
        yield pc
    finally:
        # Not a single cancel(): one can be lost on Python 3.11, and the test then hung until its timeout.
        await cancel_and_wait(task)
        try:
            # Gathers the jobs still running, which the stop cancelled: their CancelledError is not ours.
            await worker.close()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this test itself is being cancelled (its timeout)
        except Exception:  # a job's own failure at the stop is not this fixture's concern
            pass
        await pc.close()
