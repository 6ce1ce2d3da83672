"""The Kommo access token expires during a full sync while two workers need it: exactly one refresh reaches
Kommo (refresh tokens are single-use), no invalid_grant, and the sync finishes exactly; 50 more callers in two
other processes need Kommo at the same moment without running their pools dry."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.accounts.kommo import kommo_client_for
from app.context import build_context
from tests.conftest import Stack, raw_sql
from tests.faults.support import WorkerProcess, wait_worker_ready, worker_env
from tests.support.e2e import assert_mirror_exact, connect_account, wait_quiet


async def test_token_expires_mid_full_sync_single_refresh(
    stack: Stack, tmp_path: Path, long_run: bool
) -> None:
    url = stack.settings.database_url
    assert url
    contacts = 5000 if long_run else 2500
    account = await connect_account(stack, contacts=contacts, seed=15)
    r = await stack.kommo.post("/_sandbox/faults", json={"latency_ms": 150})
    assert r.status_code == 200, r.text
    # The default 60 s job timeout: a full-sync slice (40 s) outlives a shorter one (see docs/reliability.md).
    workers = [
        WorkerProcess(worker_env(stack.settings, CONTACTSYNC_WORKER_JOB_TIMEOUT="60"), tmp_path, f"w{i}")
        for i in range(2)
    ]
    contexts = [await build_context(stack.settings) for _ in range(2)]  # two more processes' worth of pools
    try:
        for w in workers:
            w.start()
        for w in workers:
            await wait_worker_ready(w)
        before = (await stack.kommo.get("/_sandbox/stats")).json()
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        for _ in range(200):
            rows = await raw_sql(url, "SELECT cursor FROM sync_run WHERE id=$1", run_id)
            if int(rows[0]["cursor"] or 0) >= 2:
                break
            await asyncio.sleep(0.05)
        # Kommo's clock moves to 100 s before the token's end; ours agrees that it is (nearly) over.
        r = await stack.kommo.post("/_sandbox/clock/advance", json={"seconds": 86_400 - 100})
        assert r.status_code == 200, r.text
        await raw_sql(url, "UPDATE kommo_token SET expires_at = now() - interval '1 second'")

        async def need_kommo(i: int) -> str:
            client = await kommo_client_for(contexts[i % 2], account.account_id)
            return client.access_token if hasattr(client, "access_token") else str(i)

        # 25 callers per process: before the in-process refresh queue, 25 exhausted a process's pool (each held
        # its session's connection plus one waiting on the advisory lock); now they queue without one.
        await asyncio.gather(*(need_kommo(i) for i in range(50)))
        await wait_quiet(stack, account, within=90)
        run = (await stack.api.get(f"/sync/runs/{run_id}", headers=stack.admin_headers)).json()
        assert run["status"] == "done", run
        assert run["counters"]["fetched"] >= contacts
        after = (await stack.kommo.get("/_sandbox/stats")).json()
        assert after["refresh_count"] - before["refresh_count"] == 1, after
        assert after["token_errors"] == before["token_errors"], after
        for w in workers:
            assert not [
                e for e in w.log_events() if "invalid_grant" in str(e) or "refresh_rejected" in str(e)
            ]
        await assert_mirror_exact(stack, account)
    finally:
        for w in workers:
            w.stop()
        for pc in contexts:
            await pc.close()
