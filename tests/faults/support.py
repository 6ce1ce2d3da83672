"""Fault-test machinery: worker subprocesses you can kill -9, a private redis-server, a cuttable TCP proxy,
webhook bodies recorded at the Kommo sandbox, and the exact mirror comparison."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from app.config import Settings
from app.localservers import LocalServer, start_redis
from app.servers import free_port
from tests.conftest import Stack, raw_sql
from tests.support.e2e import (
    Account,
    kommo_contacts,
)

VENV_BIN = Path(sys.executable).parent
CONTACTSYNC = str(VENV_BIN / "contactsync")


# --- worker subprocesses -------------------------------------------------------------------------------------


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``contactsync worker`` subprocess wired like ``settings`` (JSON logs to stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    assert settings.database_url
    assert settings.redis_url
    assert settings.secret_keys
    env.update(
        {
            "CONTACTSYNC_ENV": "test",
            "CONTACTSYNC_DATABASE_URL": settings.database_url,
            "CONTACTSYNC_REDIS_URL": settings.redis_url,
            "CONTACTSYNC_SECRET_KEYS": settings.secret_keys.get_secret_value(),
            "CONTACTSYNC_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
            "CONTACTSYNC_PUBLIC_URL": settings.public_url,
            "CONTACTSYNC_KOMMO_BASE_URL": settings.kommo_base_url,
            "CONTACTSYNC_KOMMO_AUTH_URL": settings.kommo_auth_url,
            "CONTACTSYNC_UNISENDER_BASE_URL": settings.unisender_base_url,
            "CONTACTSYNC_LOG_FORMAT": "json",
            "CONTACTSYNC_LOG_LEVEL": "INFO",
            # a killed worker's job is re-run after job_timeout + 10 s (arq): keep the test short
            "CONTACTSYNC_WORKER_JOB_TIMEOUT": "5",
            "CONTACTSYNC_KOMMO_RATE_PER_SECOND": str(settings.kommo_rate_per_second),
        }
    )
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    """One ``contactsync worker`` OS process; stderr (JSON log lines) goes to a file that outlives it."""

    env: dict[str, str]
    log_dir: Path
    name: str = "worker"
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def start(self) -> WorkerProcess:
        assert self.proc is None or self.proc.poll() is not None
        path = self.log_dir / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(path)
        with path.open("wb") as out:
            self.proc = subprocess.Popen(
                [CONTACTSYNC, "worker"],
                env=self.env,
                cwd=self.log_dir,  # no stray .env file is read
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill9(self) -> None:
        """SIGKILL: no cleanup, no arq shutdown; whatever job it ran stays 'in progress' in Redis."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self) -> list[str]:
        lines: list[str] = []
        for p in self.logs:
            if p.exists():
                lines.extend(p.read_text(errors="replace").splitlines())
        return lines

    def log_events(self, *, current_only: bool = False) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        lines = self.logs[-1].read_text(errors="replace").splitlines() if current_only else self.log_lines()
        for line in lines:
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out


async def wait_worker_ready(worker: WorkerProcess, *, within: float = 20.0) -> None:
    """Until the worker logged its start (schema checked, arq polling)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not worker.alive():
            raise AssertionError("worker exited: " + "\n".join(worker.log_lines()[-20:]))
        if any(e.get("event") == "worker.started" for e in worker.log_events(current_only=True)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("worker did not start: " + "\n".join(worker.log_lines()[-20:]))


# --- a private redis-server ----------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    """A Redis server on its own port without persistence, so FLUSHALL and restarts touch nobody else. The
    server binary is the embedded extra's (app/localservers.py): nothing needs to be installed on the system."""

    port: int
    workdir: Path
    server: LocalServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.server is None else self.server.process

    def start(self) -> None:
        self.server = start_redis(self.workdir, port=self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # like a crash: nothing is saved (no persistence anyway)
            self.proc.wait(timeout=10)

    def cli(self, *args: str) -> str:
        """Run one command; its reply as redis-cli prints it ("OK", "0", …)."""
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10) as client:
            reply = client.execute_command(*args)
        if reply is True:
            return "OK"
        if isinstance(reply, bytes):
            return reply.decode()
        return "" if reply is None else str(reply)


def start_private_redis(workdir: Path) -> PrivateRedis:
    redis = PrivateRedis(free_port(), workdir)
    redis.start()
    return redis


# --- a TCP proxy that can be cut ------------------------------------------------------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a target.

    ``cut()`` drops every connection and refuses new ones (the server is down: callers learn at once).
    ``freeze()`` is a silent network (a partition): connections are accepted and held, and nothing is
    forwarded either way, on new or existing connections, until ``thaw()``. Then held connections go on
    where they were (a client that gave up in the meantime has closed its end, and the close reaches the
    server then); new ones reach the target only once thawed.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.up = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                data = await reader.read(65536)
                await self._flowing.wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        await self._flowing.wait()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._flowing.wait()  # frozen: accepted, held, not forwarded
            if not self.up:
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.close()
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
        finally:
            self._writers.discard(writer)

    def cut(self) -> None:
        self.up = False
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self.cut()
        self.thaw()  # held pipes and connections see the cut and end
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


# --- webhook bodies ------------------------------------------------------------------------------------------


async def set_kommo_config(stack: Stack, **changes: object) -> None:
    r = await stack.kommo.patch("/_sandbox/config", json=changes)
    assert r.status_code == 200, r.text


async def recorded_bodies(stack: Stack) -> list[str]:
    """Every distinct body the Kommo sandbox delivered (or tried to), oldest first."""
    r = await stack.kommo.get("/_sandbox/deliveries")
    assert r.status_code == 200, r.text
    seen: dict[object, str] = {}
    for d in r.json():
        seen.setdefault(d["body_id"], d["body"])
    return list(seen.values())


async def post_webhook(client: httpx.AsyncClient, account: Account, body: str) -> httpx.Response:
    return await client.post(
        f"/webhooks/kommo/{account.account_id}",
        params={"token": account.webhook_token},
        content=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def email_values(emails: Iterable[str]) -> list[dict[str, object]]:
    return [{"field_code": "EMAIL", "values": [{"value": e, "enum_code": "WORK"} for e in emails]}]


async def edit_stream(
    stack: Stack, account: Account, n: int, rng: random.Random, *, spare: frozenset[int] = frozenset()
) -> None:
    """``n`` changes through the Kommo sandbox's control API (each fires Kommo's webhooks): renames, address
    additions and removals, creations, deletions and restores; the contacts in ``spare`` are left alone."""
    base = f"/_sandbox/accounts/{account.subdomain}/contacts"
    deleted: list[int] = []
    for i in range(n):
        live = await kommo_contacts(stack, account)
        cid = rng.choice(sorted(set(live) - spare))
        kind = rng.choice(["rename", "rename", "add", "remove", "create", "delete", "restore"])
        emails = list(live[cid]["emails"])  # type: ignore[call-overload]
        if kind == "restore" and not deleted:
            kind = "rename"
        if kind == "rename":
            r = await stack.kommo.patch(base, json=[{"id": cid, "name": f"Edit {i} {rng.randint(0, 99999)}"}])
        elif kind == "add":
            emails.append(f"fault{i}.{cid}@example.org")
            r = await stack.kommo.patch(
                base, json=[{"id": cid, "custom_fields_values": email_values(emails)}]
            )
        elif kind == "remove":
            if emails:
                emails.pop(rng.randrange(len(emails)))
            r = await stack.kommo.patch(
                base, json=[{"id": cid, "custom_fields_values": email_values(emails)}]
            )
        elif kind == "create":
            r = await stack.kommo.post(
                base,
                json=[{"name": f"New {i}", "custom_fields_values": email_values([f"made{i}@example.net"])}],
            )
        elif kind == "delete":
            r = await stack.kommo.post(f"{base}/{cid}/delete")
            deleted.append(cid)
        else:
            r = await stack.kommo.post(f"{base}/{deleted.pop()}/restore")
        assert r.status_code in (200, 201), (kind, r.status_code, r.text)


# --- the verdict ----------------------------------------------------------------------------------------------


async def ledger_summary(stack: Stack, account: Account) -> dict[str, object]:
    r = await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/ledger/summary")
    assert r.status_code == 200, r.text
    summary: dict[str, object] = r.json()
    return summary


async def pending_counts(stack: Stack) -> dict[str, int]:
    url = stack.settings.database_url
    assert url
    rows = await raw_sql(
        url,
        "SELECT (SELECT count(*) FROM webhook_event WHERE status='pending') AS ev,"
        " (SELECT count(*) FROM outbox WHERE status='pending') AS ob,"
        " (SELECT count(*) FROM sync_run WHERE status IN ('pending','running')) AS runs",
    )
    return {k: int(v) for k, v in dict(rows[0]).items()}
