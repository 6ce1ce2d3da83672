"""5,000 (quick: 1,000) webhook deliveries, duplicated and shuffled (recorded Kommo bodies posted to the service in random
order, each 1-4 times, concurrently): exactly the right final state, and Unisender receives each distinct
change once (no address imported twice in a row with identical data)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from tests.conftest import Stack, raw_sql
from tests.faults.support import (
    WorkerProcess,
    edit_stream,
    ledger_summary,
    post_webhook,
    recorded_bodies,
    wait_worker_ready,
    worker_env,
)
from tests.support.e2e import assert_mirror_exact, connect_account, wait_quiet


def _has_deletion(body: str) -> bool:
    return any(key.startswith("contacts[delete]") for key, _ in parse_qsl(body, keep_blank_values=True))


@pytest.mark.timeout(600)
async def test_burst_of_duplicate_reordered_deliveries(stack: Stack, tmp_path: Path, long_run: bool) -> None:
    rng = random.Random(4606)
    url = stack.settings.database_url
    assert url
    account = await connect_account(stack, contacts=300, seed=16)
    # Default 60 s job timeout: one events job may drain 500 bodies with Kommo verification calls.
    worker = WorkerProcess(worker_env(stack.settings, CONTACTSYNC_WORKER_JOB_TIMEOUT="60"), tmp_path, "w")
    worker.start()
    try:
        await wait_worker_ready(worker)
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account, within=60)
        worker.stop()
        # Kommo batches changes of a window into one body, shuffled, and sometimes sends a body twice.
        r = await stack.kommo.patch(
            "/_sandbox/config", json={"batch_window_ms": 50, "reorder": True, "duplicate_rate": 0.3}
        )
        assert r.status_code == 200, r.text
        await stack.kommo.delete("/_sandbox/deliveries")
        await edit_stream(stack, account, 800 if long_run else 100, rng)
        await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 60})
        bodies = await recorded_bodies(stack)
        # Replay them as a storm: every body 1-4 times, shuffled, 5,000 deliveries with --long (600 quick).
        total = 5_000 if long_run else 600
        storm = [rng.choice(bodies) for _ in range(total - len(bodies))] + bodies
        rng.shuffle(storm)
        await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/ledger/summary")
        # Every recorded body was delivered (and stored) once already; a body that carries versions is the same
        # change when it comes again, while a body with a deletion (no version) is stored at each delivery.
        [before] = await raw_sql(url, "SELECT count(*) AS n FROM webhook_event WHERE source='kommo'")
        with_deletions = sum(1 for body in storm if _has_deletion(body))
        worker.start()
        await wait_worker_ready(worker)
        sem = asyncio.Semaphore(16)
        statuses: dict[int, int] = {}

        retried = 0

        async def deliver(body: str) -> None:
            nonlocal retried
            async with sem:
                resp = await post_webhook(stack.api, account, body)
                # A 503 is intake's answer when its database budget ran out (nothing stored): Kommo sends the
                # delivery again, and so does this test (bounded), as long as that stays rare.
                for _ in range(3):
                    if resp.status_code != 503:
                        break
                    retried += 1
                    await asyncio.sleep(0.2)
                    resp = await post_webhook(stack.api, account, body)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1

        await asyncio.gather(*(deliver(b) for b in storm))
        assert statuses == {200: total}, statuses
        assert retried <= total // 100, retried  # a loaded box may refuse a few, never a real share
        await wait_quiet(stack, account, within=120)
        await assert_mirror_exact(stack, account)
        summary = await ledger_summary(stack, account)
        assert summary["consecutive_identical_rows"] == 0, summary
        [after] = await raw_sql(url, "SELECT count(*) AS n FROM webhook_event WHERE source='kommo'")
        # A 503 means "not stored" (intake waits for a write its body is in), except when the database commits
        # just as the write's own timer gives up on it: then the retried deletion is stored again (and verified
        # against Kommo again, harmlessly). So never fewer rows than deliveries, and extras only from 503s.
        extra = after["n"] - before["n"] - with_deletions
        assert 0 <= extra <= retried, (after["n"] - before["n"], with_deletions, retried, total)
    finally:
        worker.stop()
