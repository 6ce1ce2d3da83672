"""Shared benchmark plumbing: a private database and Redis db, service/worker subprocesses, the sandboxes
in-process, a raw HTTP/1.1 load generator, percentiles and /proc readings.

Everything talks over loopback. Databases are named ``contactsync_bench_*`` and dropped afterwards; Redis
uses database 13 (the tests use 9) and is flushed before each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.config import Environment, Settings
from app.servers import free_port, serve_in_background

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_DSN = os.environ.get("CONTACTSYNC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CONTACTSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
NCPU = os.cpu_count() or 1


def machine() -> str:
    """One line describing the host (CPU model, cores, Python)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {NCPU} cores, Python {sys.version.split()[0]}"


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


# --- database and redis ---------------------------------------------------------------------------------


@asynccontextmanager
async def fresh_database(prefix: str = "contactsync_bench") -> AsyncIterator[str]:
    """A new empty database; yields its plain ``postgresql://`` DSN and drops it afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def flush_redis() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)  # type: ignore[no-untyped-call]
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def sa_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


# --- service processes ----------------------------------------------------------------------------------


@dataclass
class ServiceConfig:
    """What the service and worker subprocesses are given through ``CONTACTSYNC_*``."""

    dsn: str
    public_url: str
    kommo_url: str = "http://127.0.0.1:1"
    unisender_url: str = "http://127.0.0.1:1"
    admin_token: str = ""
    secret_keys: str = ""
    extra: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.admin_token = self.admin_token or secrets.token_urlsafe(24)
        self.secret_keys = self.secret_keys or Fernet.generate_key().decode()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
        env.update(
            {
                "CONTACTSYNC_ENV": "test",
                "CONTACTSYNC_DATABASE_URL": sa_url(self.dsn),
                "CONTACTSYNC_REDIS_URL": REDIS_URL,
                "CONTACTSYNC_SECRET_KEYS": self.secret_keys,
                "CONTACTSYNC_ADMIN_TOKEN": self.admin_token,
                "CONTACTSYNC_PUBLIC_URL": self.public_url,
                "CONTACTSYNC_KOMMO_BASE_URL": self.kommo_url + "/{host}",
                "CONTACTSYNC_KOMMO_AUTH_URL": self.kommo_url + "/oauth",
                "CONTACTSYNC_UNISENDER_BASE_URL": self.unisender_url,
                "CONTACTSYNC_LOG_FORMAT": "json",
                "CONTACTSYNC_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(self.extra or {})
        return env

    def settings(self) -> Settings:
        """The same configuration as a Settings object (what tests.support helpers read)."""
        return Settings(
            env=Environment.TEST,
            database_url=sa_url(self.dsn),
            redis_url=REDIS_URL,
            secret_keys=SecretStr(self.secret_keys),
            admin_token=SecretStr(self.admin_token),
            public_url=self.public_url,
            kommo_base_url=self.kommo_url + "/{host}",
            kommo_auth_url=self.kommo_url + "/oauth",
            unisender_base_url=self.unisender_url,
            _env_file=None,
        )


def migrate(cfg: ServiceConfig) -> None:
    """``contactsync migrate`` against the config's database."""
    subprocess.run(
        [str(VENV_BIN / "contactsync"), "migrate"],
        env=cfg.env(),
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )


def _pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None or NCPU < 2:
        return None

    def preexec() -> None:
        os.sched_setaffinity(0, {cpu})

    return preexec


async def _wait_http(url: str, proc: subprocess.Popen[bytes], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before answering {url}")
            with contextlib.suppress(httpx.HTTPError):
                r = await client.get(url)
                if r.status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {within} s")


@asynccontextmanager
async def uvicorn_process(
    target: str,
    port: int,
    env: dict[str, str],
    *,
    factory: bool = False,
    cpu: int | None = None,
    probe: str = "/healthz",
    extra_args: Sequence[str] = (),
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """uvicorn (httptools + uvloop, no access log, 1 process) serving ``target`` on ``port``."""
    args = [
        str(VENV_BIN / "uvicorn"),
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        *(["--factory"] if factory else []),
        # BENCH_APP_DIR: serve a patched scratch copy of app/ (to measure a proposed fix side by side).
        *(
            ["--app-dir", os.environ["BENCH_APP_DIR"]]
            if os.environ.get("BENCH_APP_DIR") and target.startswith("app.")
            else []
        ),
        *extra_args,
    ]
    proc = subprocess.Popen(args, env=env, cwd=ROOT, preexec_fn=_pin(cpu))  # noqa: ASYNC220 (start-up only)
    try:
        await _wait_http(f"http://127.0.0.1:{port}{probe}", proc)
        yield proc
    finally:
        await stop_process(proc)


@asynccontextmanager
async def service_process(
    port: int, env: dict[str, str], *, cpu: int | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``contactsync serve`` on ``port``: the service as deployed (uvloop, httptools with the service's
    connection limits, no access log). BENCH_APP_DIR as for ``uvicorn_process`` (first on PYTHONPATH)."""
    scratch = os.environ.get("BENCH_APP_DIR")
    if scratch:
        env = {**env, "PYTHONPATH": os.pathsep.join([scratch, env.get("PYTHONPATH", str(ROOT))])}
    proc = subprocess.Popen(  # noqa: ASYNC220 (start-up only)
        [str(VENV_BIN / "contactsync"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        preexec_fn=_pin(cpu),
    )
    try:
        await _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield proc
    finally:
        await stop_process(proc)


@asynccontextmanager
async def worker_process(
    cfg: ServiceConfig, *, cpu: int | None = None, role: str | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``contactsync worker`` as its own process (``role``: its ``--role``)."""
    proc = subprocess.Popen(  # noqa: ASYNC220 (start-up only)
        [str(VENV_BIN / "contactsync"), "worker", *(["--role", role] if role else [])],
        env=cfg.env(),
        cwd=ROOT,
        preexec_fn=_pin(cpu),
    )
    try:
        await asyncio.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        yield proc
    finally:
        await stop_process(proc)


async def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (only this process, by its pid)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 (a child process, no event)
        await asyncio.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (VmHWM = peak RSS, VmRSS = current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def start_py_spy(
    pid: int, out: str, *, rate: int = 100, seconds: float | None = None
) -> subprocess.Popen[bytes]:
    """py-spy (the bench extra) sampling ``pid`` into ``out`` as raw folded stacks (``bench.folded`` reads them),
    for ``seconds`` or until ``stop_py_spy``."""
    args = [str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-f", "raw", "-o", out, "-r", str(rate)]
    if seconds is not None:
        args += ["-d", str(int(seconds))]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def stop_py_spy(spy: subprocess.Popen[bytes], *, interrupt: bool = True) -> None:
    """Stop a ``start_py_spy`` (it writes its file on SIGINT), or with ``interrupt=False`` wait for its end."""
    if interrupt:
        spy.send_signal(signal.SIGINT)
    await asyncio.to_thread(spy.wait, 30)


def proc_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the whole stack ------------------------------------------------------------------------------------


@dataclass
class BenchStack:
    """Sandboxes in this process, service (and optionally a worker) as subprocesses; ``stack`` is the
    ``tests.conftest.Stack`` that tests.support.e2e helpers take."""

    cfg: ServiceConfig
    stack: Any
    api_proc: subprocess.Popen[bytes]
    worker_proc: subprocess.Popen[bytes] | None


@asynccontextmanager
async def bench_stack(
    *,
    kommo_config: Any = None,
    unisender_config: Any = None,
    extra_env: dict[str, str] | None = None,
    with_worker: bool = True,
    api_cpu: int | None = None,
    worker_cpu: int | None = None,
) -> AsyncIterator[BenchStack]:
    """Both sandboxes (in-process, real HTTP), a migrated fresh database, the API and a worker."""
    from sandbox.kommo import create_kommo_sandbox
    from sandbox.unisender import create_unisender_sandbox
    from tests.conftest import Stack

    await flush_redis()
    kommo_app = create_kommo_sandbox(kommo_config)
    unisender_app = create_unisender_sandbox(unisender_config)
    port = free_port()
    async with (
        fresh_database() as dsn,
        serve_in_background(kommo_app) as kommo_url,
        serve_in_background(unisender_app) as unisender_url,
    ):
        cfg = ServiceConfig(
            dsn=dsn,
            public_url=f"http://127.0.0.1:{port}",
            kommo_url=kommo_url,
            unisender_url=unisender_url,
            extra=extra_env,
        )
        await asyncio.to_thread(migrate, cfg)
        async with (
            service_process(port, cfg.env(), cpu=api_cpu) as api_proc,
            httpx.AsyncClient(base_url=cfg.public_url, timeout=30) as api,
            httpx.AsyncClient(base_url=kommo_url, timeout=30) as kommo,
            httpx.AsyncClient(base_url=unisender_url, timeout=30) as unisender,
        ):
            stack = Stack(
                settings=cfg.settings(),
                api=api,
                kommo=kommo,
                unisender=unisender,
                kommo_app=kommo_app,
                unisender_app=unisender_app,
                admin_headers={"Authorization": f"Bearer {cfg.admin_token}"},
            )
            if with_worker:
                async with worker_process(cfg, cpu=worker_cpu) as wproc:
                    yield BenchStack(cfg, stack, api_proc, wproc)
            else:
                yield BenchStack(cfg, stack, api_proc, None)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def use_uvloop() -> None:
    """Run the benchmark's own loop on uvloop (the load generator then costs less CPU); SIGTERM (e.g. from
    ``timeout``) then unwinds like Ctrl-C, so child processes stop and the bench database is dropped."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    signal.signal(signal.SIGTERM, _interrupt)


def pin_self(cpu: int | None) -> None:
    if cpu is not None and NCPU >= 2:
        os.sched_setaffinity(0, {cpu})


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"
