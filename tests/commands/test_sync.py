"""``contactsync sync ACCOUNT [--follow]``: starts a full sync as ``POST /sync/contacts`` does, finds the one
already going, and follows a run to its end (a real worker against the sandboxes), giving up when told."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from app.commands.sync import Progress
from app.config import Settings
from app.context import ProcessContext
from app.db.base import utcnow
from app.db.models import SyncRun
from app.db.states import IntegrationStatus, RunKind, RunStatus
from app.queue import BULK_QUEUE_NAME
from app.sync.runs_repo import RunView
from tests.commands.conftest import Cli, add_connected, env_for, integration
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import connect_account

ROOT = Path(__file__).resolve().parents[2]


async def _runs(settings: Settings) -> list[tuple[str, str]]:
    assert settings.database_url
    rows = await raw_sql(settings.database_url, "SELECT id, status FROM sync_run ORDER BY created_at")
    return [(r["id"], r["status"]) for r in rows]


async def test_sync_starts_a_run_and_a_second_call_finds_the_same_one(
    ctx: ProcessContext, settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    async with ctx.db.session_scope() as session:
        await add_connected(session, 31)
    run = cli(settings)
    first = await run("sync", "31")
    assert first.code == 0, first.err
    started = re.fullmatch(r"full sync of account 31 started: run (\S+)\n", first.out)
    assert started, first.out
    run_id = started.group(1)
    assert await _runs(settings) == [(run_id, "pending")]
    # Its first slice is in the service's queue (no worker here to take it).
    assert [job.function for job in await ctx.queue.queued_jobs(queue_name=BULK_QUEUE_NAME)] == ["full_sync"]
    again = await run("sync", "31")
    assert again.code == 0, again.err
    assert again.out == f"a full sync of account 31 is already pending: run {run_id}\n"
    assert await _runs(settings) == [(run_id, "pending")]


async def test_follow_gives_up_after_the_timeout_and_the_run_goes_on(
    ctx: ProcessContext, settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    async with ctx.db.session_scope() as session:
        await add_connected(session, 32)
    r = await cli(settings)("sync", "32", "--follow", "--timeout", "1.2")
    assert r.code == 124, r.err
    run_id = re.search(r"run (\S+)\n", r.out).group(1)  # type: ignore[union-attr]
    # Not a terminal: plain lines, one per change of the run (it never moved without a worker).
    assert f"run {run_id}: pending: fetched 0  changed 0  pushed 0  elapsed " in r.out
    assert r.out.count(f"run {run_id}: pending") == 1
    assert r.out.splitlines()[-1] == (
        f"gave up following after 1s: run {run_id} is still pending and goes on "
        "(contactsync sync 32 --follow to watch it again)"
    )
    assert await _runs(settings) == [(run_id, "pending")]


async def test_sync_refuses_unknown_and_unconnected_accounts(
    ctx: ProcessContext, settings: Settings, cli: Callable[[Settings], Cli]
) -> None:
    async with ctx.db.session_scope() as session:
        session.add(integration(33, status=IntegrationStatus.NEEDS_REAUTH))
    run = cli(settings)
    unknown = await run("sync", "999", "--follow")
    assert unknown.code == 1
    assert "Account 999 is not registered" in unknown.err
    unconnected = await run("sync", "33")
    assert unconnected.code == 1
    assert "Account 33 is needs_reauth: connect Kommo first" in unconnected.err
    assert await _runs(settings) == []


def _view(status: RunStatus, fetched: int) -> RunView:
    run = SyncRun(
        id="r1",
        account_id=1,
        kind=RunKind.FULL,
        status=status,
        fetched=fetched,
        changed=fetched - 1,
        pushed=fetched - 2,
        created_at=utcnow(),
        started_at=utcnow(),
    )
    return RunView(run, 0, 0, [])


def test_progress_redraws_one_line_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=True)
    progress.show(_view(RunStatus.RUNNING, 250))
    progress.show(_view(RunStatus.RUNNING, 500))
    progress.show(_view(RunStatus.DONE, 750))
    progress.end()
    drawn = stream.getvalue()
    assert "\n" not in drawn[:-1]  # every redraw in place, one newline at the end
    frames = drawn[:-1].split("\r")[1:]
    assert len(frames) == 3
    assert all(f.endswith("\x1b[K") for f in frames)
    assert frames[1].startswith("[")
    assert "running  fetched 500  changed 499  pushed 498  elapsed 0s" in frames[1]
    assert frames[0][:26] != frames[1][:26]  # the bar moves while the run goes on
    assert frames[2].startswith("[" + "#" * 24 + "] done")


async def test_ctrl_c_stops_following_without_cancelling_the_run(
    ctx: ProcessContext, settings: Settings
) -> None:
    async with ctx.db.session_scope() as session:
        await add_connected(session, 34)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "sync",
        "34",
        "--follow",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_for(settings),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "full sync of account 34 started" in first, first
        await asyncio.wait_for(proc.stdout.readline(), 20)  # following: the first progress line
        proc.send_signal(signal.SIGINT)
        out, err_bytes = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    rest, err = out.decode(), err_bytes.decode()
    assert proc.returncode == 130, err
    run_id = first.split()[-1]
    assert f"stopped following; run {run_id} goes on" in rest
    assert "Traceback" not in err
    assert await _runs(settings) == [(run_id, "pending")]


async def test_follow_watches_a_real_run_to_done(stack: Stack, cli: Callable[[Settings], Cli]) -> None:
    """A run started over HTTP (no worker yet) is the one the command finds and follows, to its end."""
    account = await connect_account(stack, contacts=600, seed=3)
    started = await stack.api.post(
        "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    async with running_worker(stack.settings):
        r = await cli(stack.settings)("sync", str(account.account_id), "--follow", "--timeout", "60")
    assert r.code == 0, r.out + r.err
    # Pending, or already running when the worker took it before the command looked: the same run either way.
    assert r.out.splitlines()[0] in {
        f"a full sync of account {account.account_id} is already {state}: run {run_id}"
        for state in ("pending", "running")
    }
    assert stack.settings.database_url
    row = (
        await raw_sql(
            stack.settings.database_url,
            "SELECT status, fetched, changed, pushed FROM sync_run WHERE id = $1",
            run_id,
        )
    )[0]
    assert row["status"] == "done"
    assert row["fetched"] == 600
    last = r.out.splitlines()[-1]
    assert re.fullmatch(
        rf"run {run_id} done in \d+s: fetched 600, changed {row['changed']}, pushed {row['pushed']}, "
        r"rejected \d+, contacts not applied 0",
        last,
    ), last
    assert f"run {run_id}: done: fetched 600" in r.out
    assert len(await _runs(stack.settings)) == 1
