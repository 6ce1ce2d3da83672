"""Two worker processes syncing two accounts of one Kommo integration at once stay inside that integration's
one budget (7 requests in any second, as Kommo counts them): the sandbox answers 429 to an eighth, and with
per-process budgets each process would spend 7 of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.faults.support import WorkerProcess, wait_worker_ready, worker_env
from tests.support.e2e import connect_account, wait_quiet

CONTACTS = 2000  # 8 pages of 250 per account


@pytest.mark.slow
async def test_two_workers_on_one_integration_never_draw_a_429(stack: Stack, tmp_path: Path) -> None:
    redirect = f"{stack.settings.public_url}/auth/callback"
    integ = (await stack.kommo.post("/_sandbox/integrations", json={"redirect_uri": redirect})).json()
    north = await connect_account(stack, subdomain="north", contacts=CONTACTS, seed=1, integration=integ)
    south = await connect_account(stack, subdomain="south", contacts=CONTACTS, seed=2, integration=integ)
    await stack.kommo.delete("/_sandbox/stats")

    # One bulk job at a time per worker: the two syncs run in the two processes, not side by side in one.
    env = worker_env(stack.settings, CONTACTSYNC_WORKER_MAX_JOBS="1", CONTACTSYNC_WORKER_MAX_BULK_JOBS="1")
    workers = [WorkerProcess(env, tmp_path, name=f"worker{i}").start() for i in range(2)]
    try:
        for worker in workers:
            await wait_worker_ready(worker)
        for account in (north, south):
            r = await stack.api.post(
                "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
            )
            assert r.status_code == 202, r.text
        for account in (north, south):
            await wait_quiet(stack, account, within=90)
    finally:
        for worker in workers:
            worker.stop()

    stats = (await stack.kommo.get("/_sandbox/stats")).json()
    fetched = stats["calls"].get("GET /api/v4/contacts", 0)
    assert fetched >= 2 * CONTACTS // 250  # both accounts' pages were read
    # Both processes read pages: the budget was really shared across processes, not used by one alone.
    readers = [w for w in workers if any(e.get("event") == "sync.page" for e in w.log_events())]
    assert len(readers) == 2, [len(w.log_lines()) for w in workers]
    assert stats["rate_limited"] == 0, stats["responses"]
    assert stats["max_calls_in_1s"][integ["client_id"]] <= 7
    runs = (await stack.api.get("/sync/runs", headers=stack.admin_headers)).json()["runs"]
    assert sorted(r["status"] for r in runs if r["kind"] == "full") == ["done", "done"]
