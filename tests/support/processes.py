"""Which processes a process started, and whether they still run (from /proc: the tests run on Linux)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split at the last ")".
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return name, state, int(ppid)


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``, by pid, with their command names."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(ValueError):
                info = _stat(int(entry.name))
                if info is not None and info[2] == pid and info[1] != "Z":
                    out[int(entry.name)] = info[0]
    return out


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has exited; only its parent has not reaped it)."""
    info = _stat(pid)
    return info is not None and info[1] != "Z"


def wait_gone(pids: dict[int, str], within: float) -> dict[int, str]:
    """Wait until none of ``pids`` runs; returns those still running at the deadline."""
    deadline = time.monotonic() + within
    left = dict(pids)
    while left and time.monotonic() < deadline:
        left = {pid: name for pid, name in left.items() if running(pid)}
        time.sleep(0.05)
    return left
