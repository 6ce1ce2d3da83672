"""Embedded mode: `contactsync serve --embedded` starts a real PostgreSQL and a real Redis from the wheels of
the embedded extra (data under its state dir), runs API and worker in one process, keeps the database
between runs, refuses a second process on the same state dir, and leaves no server behind however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import DEV_ADMIN_TOKEN
from app.servers import free_port
from tests.support.processes import children, wait_gone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
SERVERS = {"postgres", "redis-server"}


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    return {**env, "PYTHONPATH": str(ROOT), "CONTACTSYNC_STATE_DIR": str(state)}


class Serve:
    """One `contactsync serve --embedded` process."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.port = port
        self.log = tmp / f"serve-{port}-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--embedded", "--port", str(port)],
                cwd=tmp,  # no stray .env file is read
                env=_env(tmp / "state"),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        # One client for the whole wait: httpx.get builds a client, and with it a TLS context (20 ms of CPU),
        # on every call, and this loop polls ten times a second while the embedded servers start.
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, "serve --embedded exited:\n" + self.output()[-3000:]
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"/readyz not 200 within {within} s:\n" + self.output()[-3000:])

    def servers(self) -> dict[int, str]:
        found = children(self.proc.pid)
        assert set(found.values()) == SERVERS, found
        return found

    def stop(self, sig: signal.Signals, within: float = 30.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"still running {within} s after {sig.name}:\n" + self.output()[-3000:]
            ) from None


@pytest.fixture
def serves(tmp_path: Path) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait(10)


def test_serve_embedded_runs_on_real_servers_keeps_data_and_stops_them(
    tmp_path: Path, serves: list[Serve]
) -> None:
    first = Serve(tmp_path, free_port())
    serves.append(first)
    first.wait_ready()
    ready = httpx.get(f"{first.url}/readyz", timeout=5).json()
    assert ready["checks"] == {"database": {"ok": True}, "redis": {"ok": True}}
    servers = first.servers()
    assert (tmp_path / "state" / "postgres" / "pgdata" / "PG_VERSION").exists()
    body = {
        "account_id": 4242,
        "subdomain": "acme",
        "client_id": "c",
        "client_secret": "s",
        "redirect_uri": "http://127.0.0.1/cb",
    }
    r = httpx.post(f"{first.url}/integration", json=body, headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text

    # A second process on the same state dir is refused before it touches anything; the first goes on.
    second = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--embedded", "--port", str(free_port())],
        cwd=tmp_path,
        env=_env(tmp_path / "state"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"in use by another contactsync process (pid {first.proc.pid})" in second.stderr
    assert httpx.get(f"{first.url}/readyz", timeout=5).status_code == 200

    assert first.stop(signal.SIGTERM) == 0, first.output()[-3000:]
    assert wait_gone(servers, within=10) == {}
    assert "worker.stopped" in first.output()

    # Started again on the same state dir: the same database, then Ctrl-C stops everything too.
    again = Serve(tmp_path, free_port())
    serves.append(again)
    again.wait_ready()
    servers = again.servers()
    r = httpx.get(f"{again.url}/accounts/4242", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    assert again.stop(signal.SIGINT) == 0, again.output()[-3000:]
    assert wait_gone(servers, within=10) == {}


def test_killed_serve_leaves_no_server_running(tmp_path: Path, serves: list[Serve]) -> None:
    serve = Serve(tmp_path, free_port())
    serves.append(serve)
    serve.wait_ready()
    servers = serve.servers()
    serve.proc.send_signal(signal.SIGKILL)  # no cleanup code runs: the kernel's parent-death signal does it
    serve.proc.wait(10)
    assert wait_gone(servers, within=15) == {}
    # The next start recovers the database and serves again.
    again = Serve(tmp_path, free_port())
    serves.append(again)
    again.wait_ready()
    assert again.stop(signal.SIGTERM) == 0
