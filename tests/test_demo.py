"""The README's first command: the demo runs the whole product on the embedded default (a PostgreSQL and a
Redis of its own, from the embedded extra) against both sandboxes, each live edit shows up in Unisender, and
both servers are gone when it ends."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.localservers import port_answers
from app.servers import free_port

pytestmark = pytest.mark.slow


def test_demo_mirrors_live_edits_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACTSYNC_")}
    port = free_port()
    while port > 65000:
        port = free_port()
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--edits", "6", "--contacts", "120", "--port", str(port)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    assert "Full sync done" in out, out
    assert "fetched 120 contacts" in out, out
    assert out.count("→ Unisender:") == 6, out
    assert "Sync spec v2: Name ← name, Plan ← Kommo's select 'Plan'" in out, out
    assert "Plan='" in out, out  # a mapped custom field mirrored
    assert "list VIP after" in out, out  # a tag-driven list mirrored
    assert (tmp_path / ".contactsync" / "demo" / "postgres" / "pgdata" / "PG_VERSION").exists()
    servers = re.search(r"PostgreSQL on 127\.0\.0\.1:(\d+) .* Redis on 127\.0\.0\.1:(\d+)", r.stderr)
    assert servers, r.stderr
    for port in servers.groups():
        assert not port_answers("127.0.0.1", int(port)), f"a server still answers on {port} after the demo"


def test_the_demo_takes_another_port_when_a_sandbox_port_is_held() -> None:
    from app.demo import _port_near

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert _port_near(taken) == 0  # 0: serve_in_background picks a free one
    assert _port_near(taken) == taken
