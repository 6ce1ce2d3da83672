"""kill -9 of one of three ``contactsync worker`` processes while they serve four accounts of **one** Kommo
integration: two full syncs (several pages each) and two live webhook edit streams.

What it proves at once: the survivors take the dead slice's run over through its lease and the sweeper (not
through arq's re-run of the killed job, which the long job timeout below pushes far out) and push the pages it
had committed but not pushed; the streams keep being mirrored meanwhile; the integration's one Kommo budget is
shared by all three processes (no 429, never more than the limit in any second); every account ends exact.
The victim runs one job at a time, its slice: losing a process that held stream work is
``test_worker_kill.py::test_kill9_during_webhook_stream``'s subject."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from app.sync import pages as page_pipeline
from tests.conftest import Stack, raw_sql
from tests.faults.support import WorkerProcess, edit_stream, wait_worker_ready, worker_env
from tests.support.e2e import Account, assert_mirror_exact, connect_account, wait_quiet

SYNCED = 3000  # contacts per full-synced account: 12 pages of 250
STREAMED = 60  # contacts per streamed account (one page; their initial sync is setup, not under test)
EDITS_PER_BURST = 5
# The arq job timeout of every worker. arq re-runs a killed job only when its in-progress key expires, job
# timeout + 10 s after the job started: 130 s here, far beyond the recovery bound below, so only the run's
# lease expiring and the sweeper handing the run to a survivor can meet the bound.
JOB_TIMEOUT = 120
# Seconds the streams go on after the kill: changes keep arriving while the survivors take the work over.
STREAM_AFTER_KILL = 3.0
# Recovery slack: the dead slice's lease lapses ≤ 10 s after its last renewal (LEASE_SECONDS) and the sweeper
# runs every 10 s (measured 11-20 s from the kill to quiet). 60 s leaves room for a loaded 2-core box and stays
# well under arq's 130-s fallback, so a run nobody takes over fails the test (checked: "not recovered").
RECOVERY_SLACK = 60.0


async def _start_run(stack: Stack, account: Account) -> str:
    r = await stack.api.post("/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


async def _runs(stack: Stack, run_ids: list[str]) -> dict[str, dict[str, object]]:
    assert stack.settings.database_url
    rows = await raw_sql(
        stack.settings.database_url,
        "SELECT id, status, cursor, fetched FROM sync_run WHERE id = ANY($1::text[])",
        run_ids,
    )
    return {str(r["id"]): dict(r) for r in rows}


def _cursor(row: dict[str, object]) -> int:
    return int(row["cursor"] or 0)  # type: ignore[call-overload]


def _pages_logged(worker: WorkerProcess, run_id: str) -> list[int]:
    """The pages of ``run_id`` this process committed (its ``sync.page`` log lines), in order."""
    return [
        int(e["page"])  # type: ignore[call-overload]
        for e in worker.log_events()
        if e.get("event") == "sync.page" and e.get("run_id") == run_id
    ]


async def _stream(stack: Stack, account: Account, rng: random.Random, stop: asyncio.Event) -> int:
    """Short bursts of edits (each fires Kommo's webhooks) until ``stop``; at most 60 bursts. Paced, so the
    stream spans the kill at a rate the 2-core box sustains. Returns the number of edits made."""
    made = 0
    for _ in range(60):
        if stop.is_set():
            break
        await edit_stream(stack, account, EDITS_PER_BURST, rng)
        made += EDITS_PER_BURST
        await asyncio.sleep(0.25)
    return made


async def _kill_mid_sync(
    stack: Stack, workers: list[WorkerProcess], run_ids: list[str], pages: int
) -> tuple[WorkerProcess, str, dict[str, dict[str, object]]]:
    """Wait (≤ 60 s) until a run has committed a few pages and has several left, then kill -9 the process
    whose slice advances it. Returns the victim, the interrupted run and every run's row read after the kill
    (nothing of the victim's can commit any more)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = await _runs(stack, run_ids)
        for run_id in run_ids:
            row = rows[run_id]
            if row["status"] != "running" or not 3 <= _cursor(row) <= pages - 4:
                continue
            holders = [w for w in workers if _pages_logged(w, run_id)]
            if len(holders) != 1:
                continue  # its log line not written yet: look again
            holders[0].kill9()
            after = await _runs(stack, run_ids)
            assert after[run_id]["status"] == "running", after[run_id]
            return holders[0], run_id, after
        await asyncio.sleep(0.05)
    raise AssertionError(f"no run was mid-way within 60 s: {await _runs(stack, run_ids)}")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_kill9_one_of_three_workers_mid_sync_with_live_streams(stack: Stack, tmp_path: Path) -> None:
    pages = SYNCED // 250
    # One live and one bulk job at a time per process: the two syncs' slices run in two different processes
    # (each alone would spend the whole budget if budgets were per process), the third serves the streams and
    # the sweeper. Started first: their start-up (imports, schema check) overlaps the accounts' set-up.
    env = worker_env(
        stack.settings,
        CONTACTSYNC_WORKER_MAX_JOBS="1",
        CONTACTSYNC_WORKER_MAX_BULK_JOBS="1",
        CONTACTSYNC_WORKER_JOB_TIMEOUT=str(JOB_TIMEOUT),
    )
    workers = [WorkerProcess(env, tmp_path, name=f"worker{i}").start() for i in range(3)]
    stop = asyncio.Event()
    streams: list[asyncio.Task[int]] = []
    try:
        redirect = f"{stack.settings.public_url}/auth/callback"
        integ = (await stack.kommo.post("/_sandbox/integrations", json={"redirect_uri": redirect})).json()
        synced = [
            await connect_account(stack, subdomain=name, contacts=SYNCED, seed=seed, integration=integ)
            for seed, name in enumerate(("north", "south"), start=41)
        ]
        streamed = [
            await connect_account(stack, subdomain=name, contacts=STREAMED, seed=seed, integration=integ)
            for seed, name in enumerate(("east", "west"), start=51)
        ]
        limit = int((await stack.kommo.get("/_sandbox/config")).json()["rate_limit_rps"])
        for worker in workers:
            await wait_worker_ready(worker)
        for account in streamed:  # what the streams edit must be mirrored before they start
            await _start_run(stack, account)
        await wait_quiet(stack, streamed[0], within=60)
        await stack.kommo.delete("/_sandbox/stats")

        run_ids = [await _start_run(stack, account) for account in synced]
        rng = random.Random(7707)
        streams = [
            asyncio.create_task(_stream(stack, account, random.Random(rng.random()), stop))
            for account in streamed
        ]
        victim, interrupted, at_kill = await _kill_mid_sync(stack, workers, run_ids, pages)
        killed_at = time.monotonic()
        await asyncio.sleep(STREAM_AFTER_KILL)
        stop.set()
        edits = [await asyncio.wait_for(s, 30) for s in streams]
        streamed_after_kill = time.monotonic() - killed_at

        # The bound: the slack above, plus the stream's time after the kill (its last changes cannot be
        # mirrored before they are made), plus the Kommo calls still to be made at the integration's floor
        # (`limit` per second): every page not committed at the kill, the pages the victim had fetched but not
        # committed (fetched again), and each run's closing reads (empty page, vanish check).
        left = sum(pages - _cursor(row) for row in at_kill.values())
        calls = left + page_pipeline.FETCH_CONCURRENCY + page_pipeline.QUEUE_PAGES + 2 * len(run_ids)
        bound = RECOVERY_SLACK + streamed_after_kill + calls / limit
        try:
            await wait_quiet(stack, synced[0], within=max(1.0, bound - (time.monotonic() - killed_at)))
        except AssertionError as exc:
            raise AssertionError(f"not recovered within {bound:.1f} s of the kill -9: {exc}") from exc
        recovered = time.monotonic() - killed_at - 1.0  # wait_quiet wants 1 s of quiet before it returns
        print(f"kill -9 to quiet: {recovered:.1f} s (bound {bound:.1f} s); edits {edits}")  # noqa: T201
        assert recovered < bound, (recovered, bound)
    finally:
        stop.set()
        for s in streams:
            s.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        # Side by side: each graceful arq stop takes its time, and this test's wall time counts in the suite's.
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in workers))

    # 1. exact final state everywhere; every page of both runs committed exactly once.
    for account in synced + streamed:
        await assert_mirror_exact(stack, account)
    final = await _runs(stack, run_ids)
    assert [final[r]["status"] for r in run_ids] == ["done", "done"], final
    assert [final[r]["fetched"] for r in run_ids] == [SYNCED, SYNCED], final
    assert all(n > 0 for n in edits), edits

    # The interrupted run was finished by a survivor, from its checkpoint on; the other run was read by
    # another process than the victim (the budget was really shared by processes paging at once).
    survivors = [w for w in workers if w is not victim]
    resumed = [p for w in survivors for p in _pages_logged(w, interrupted)]
    assert resumed, "no survivor committed a page of the interrupted run"
    assert min(resumed) > _cursor(at_kill[interrupted]), (resumed, at_kill[interrupted])
    (other,) = (r for r in run_ids if r != interrupted)
    assert not _pages_logged(victim, other), "both runs were read by one process"

    # 2. no budget overshoot: Kommo (one integration, three processes) and Unisender.
    stats = (await stack.kommo.get("/_sandbox/stats")).json()
    assert stats["rate_limited"] == 0, stats["responses"]
    assert stats["blocked"] == 0, stats["responses"]
    assert 0 < stats["max_calls_in_1s"][integ["client_id"]] <= limit, stats["max_calls_in_1s"]
    uni = (await stack.unisender.get("/_sandbox/stats")).json()
    assert not {code: n for code, n in uni["errors"].items() if "limit" in code}, uni["errors"]
