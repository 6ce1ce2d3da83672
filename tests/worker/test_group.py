"""``WorkerSet`` (one class, with stand-in workers): a failing worker stops the others even when one of them
swallows a cancel, and closing stops every worker's jobs before any closes the shared Redis pool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

import pytest

from app.worker import group
from app.worker.claims import ClaimingWorker
from app.worker.group import WorkerSet, cancel_and_wait


class _Stub:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.jobs_complete = self.jobs_failed = 0
        self.in_progress_timeout_s = 70.0

    async def main(self) -> None:
        await asyncio.sleep(3600)

    def handle_sig(self, signum: int) -> None:
        self.log.append(f"stop {self.name}")
        for task in self.tasks.values():
            task.cancel()

    async def close(self) -> None:
        self.log.append(f"close {self.name} ({sum(not t.done() for t in self.tasks.values())} running)")


class _Failing(_Stub):
    async def main(self) -> None:
        await asyncio.sleep(0.05)
        raise ConnectionError("redis gone")


class _Stubborn(_Stub):
    ended = False

    async def main(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            try:
                await asyncio.sleep(3600)  # the first cancel is lost, as one can be on Python 3.11
            finally:
                self.ended = True


class _SlowToEnd(_Stub):
    ended = False

    async def main(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            # A stop that takes a while (a Redis command in flight finishing), each new cancel landing in it.
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.01)
            self.ended = True
            raise


class _Stuck(_Stub):
    """A worker whose poll ignores every cancel until released (a stop must not wait for it for ever)."""

    def __init__(self, log: list[str], name: str) -> None:
        super().__init__(log, name)
        self.release = asyncio.Event()

    async def main(self) -> None:
        while not self.release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.release.wait()


def _set(*workers: _Stub) -> WorkerSet:
    return WorkerSet(cast(list[ClaimingWorker], list(workers)))


async def test_a_failing_worker_stops_the_others_even_one_that_swallows_a_cancel() -> None:
    log: list[str] = []
    stubborn = _Stubborn(log, "bulk")
    begun = time.monotonic()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(_set(_Failing(log, "live"), stubborn).main(), timeout=5)
    assert stubborn.ended
    assert time.monotonic() - begun < 2


async def test_a_set_stopped_by_repeated_cancels_ends_only_after_every_worker_has() -> None:
    """The stopper cancels the set again while its workers are still ending: the set must not end first, or
    the shared Redis pool is closed under a worker that still polls (an 'exception never retrieved' at every
    stop)."""
    log: list[str] = []
    slow = _SlowToEnd(log, "live")
    group = asyncio.create_task(_set(slow, _Stub(log, "bulk")).main())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cancel_and_wait(group, every=0.05), timeout=5)
    assert slow.ended


async def test_a_worker_that_never_ends_does_not_hang_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group, "STOP_SECONDS", 0.3)
    log: list[str] = []
    stuck = _Stuck(log, "live")
    set_task = asyncio.create_task(_set(stuck).main())
    await asyncio.sleep(0.01)
    begun = time.monotonic()
    await asyncio.wait_for(cancel_and_wait(set_task, every=0.05), timeout=5)
    assert time.monotonic() - begun < 2
    stuck.release.set()


async def test_closing_stops_every_workers_jobs_before_any_closes() -> None:
    log: list[str] = []
    live, bulk = _Stub(log, "live"), _Stub(log, "bulk")

    async def job() -> Any:
        await asyncio.sleep(3600)

    for worker in (live, bulk):
        worker.tasks["j"] = asyncio.create_task(job())
    await _set(live, bulk).close()
    assert log == ["stop live", "stop bulk", "close live (0 running)", "close bulk (0 running)"]
    with pytest.raises(ValueError, match="at least one"):
        WorkerSet([])
