"""A replay of dead letters against the Unisender floor: ~1,000 outbox rows refused for good, the cause fixed,
``POST /accounts/{id}/dead-letters/replay {"all": true, "kind": "outbox"}`` (again while ``more``: 5,000 rows a
request), until every row is pushed.

One stack at the real limits (Kommo 7 req/s, 250 per page; Unisender 1,200 calls/min, 500 rows per import;
the service's budgets equal), the service and a worker as their own processes. ``--contacts`` seeded (about
1.2 addresses each: 850 give ~1,000), then the account's Unisender list is taken out of the sandbox and a full
sync run: Unisender refuses every row (``invalid_list``), so each address is an outbox dead letter. The list
is put back (the cause fixed), Unisender's 60-s window is left to empty (``--settle``), and the replay is
timed: the request itself, then until no outbox row is pending or rejected and Unisender holds every address
in the list. Floor = ceil(rows / 500) import calls at 1,200 a minute = calls / 20 seconds. A second replay
must be a no-op (0 replayed, no import call).

    .venv/bin/python -m bench.replay [--contacts 850] [--settle 61]

Targets: import calls = ceil(rows / 500) (the replayed rows are pushed in full batches); wall − floor ≤ 1 s
(the fixed cost: the request, one worker pick-up, the answers); every row lands; the second replay does nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.common import bench_stack, machine, proc_cpu_seconds, use_uvloop, verdict
from bench.processes import real_limits

UNI_PER_MIN = 1200
KOMMO_RPS = 7


async def _until(conn: Any, sql: str, within: float, what: str) -> float:
    """Poll ``sql`` (one boolean) until true; the seconds it took."""
    t0 = time.monotonic()
    while not await conn.fetchval(sql):
        if time.monotonic() - t0 > within:
            raise RuntimeError(f"not {what} within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def run(contacts: int, settle: float, within: float) -> dict[str, Any]:
    from sandbox.kommo import KommoSandboxConfig
    from sandbox.unisender import UnisenderSandboxConfig
    from tests.support.e2e import connect_account

    kommo_kw, unisender_kw, env = real_limits()
    async with bench_stack(
        kommo_config=KommoSandboxConfig(**kommo_kw),
        unisender_config=UnisenderSandboxConfig(**unisender_kw),
        extra_env=env,
    ) as bs:
        st = bs.stack
        account = await connect_account(st, contacts=contacts, seed=17)
        uni = st.unisender_app.state.unisender
        uacc = uni.accounts[account.api_key]
        taken = uacc.lists.pop(account.list_id)  # every row naming it is refused from now on
        await asyncio.sleep(1.2)  # let the connect's Kommo calls leave Kommo's 1-s window
        r = await st.api.post("/sync/contacts", headers=st.admin_headers, json={"id": account.account_id})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        conn = await asyncpg.connect(bs.cfg.dsn)
        try:
            await _until(
                conn,
                f"SELECT (SELECT status FROM sync_run WHERE id = '{run_id}') = 'done'"
                " AND NOT EXISTS (SELECT 1 FROM outbox WHERE status = 'pending')",
                within,
                "synced",
            )
            letters = await st.api.get(
                f"/accounts/{account.account_id}/dead-letters",
                headers=st.admin_headers,
                params={"kind": "outbox", "per_page": 1},
            )
            dead = int(letters.json()["total"])
            codes = await conn.fetch("SELECT reject_code, count(*) AS n FROM outbox GROUP BY reject_code")
            # The cause fixed: the list is back. Then Unisender's window empties, so the replay has the full budget.
            uacc.lists[account.list_id] = taken
            await asyncio.sleep(settle)
            calls0 = uni.stats.calls.get("importContacts", 0)
            assert bs.worker_proc is not None
            cpu0 = proc_cpu_seconds(bs.worker_proc.pid)
            t0 = time.monotonic()
            answers: list[dict[str, Any]] = []
            for _ in range(1000):  # 5,000 rows a request, repeated as the CLI does (bounded)
                if answers and not answers[-1]["more"]:
                    break
                r = await st.api.post(
                    f"/accounts/{account.account_id}/dead-letters/replay",
                    headers=st.admin_headers,
                    json={"all": True, "kind": "outbox"},
                )
                assert r.status_code == 200, r.text
                answers.append(r.json())
            request_s = time.monotonic() - t0
            await _until(
                conn,
                "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE status IN ('pending', 'rejected', 'dead'))",
                within,
                "drained",
            )
            wall = time.monotonic() - t0
            worker_cpu = proc_cpu_seconds(bs.worker_proc.pid) - cpu0
            calls = uni.stats.calls.get("importContacts", 0) - calls0
            done = await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'done'")
            in_list = sum(1 for c in uacc.contacts_by_id.values() if account.list_id in c.lists)
            t1 = time.monotonic()
            r = await st.api.post(
                f"/accounts/{account.account_id}/dead-letters/replay",
                headers=st.admin_headers,
                json={"all": True, "kind": "outbox"},
            )
            again_s = time.monotonic() - t1
            again = r.json()
            await asyncio.sleep(1.0)
            again_calls = uni.stats.calls.get("importContacts", 0) - calls0 - calls
        finally:
            await conn.close()
    rows = sum(int(a["replayed"]) for a in answers)
    floor_calls = math.ceil(rows / 500)
    floor = floor_calls / (UNI_PER_MIN / 60)
    return {
        "contacts": contacts,
        "dead": dead,
        "codes": {str(c["reject_code"]): int(c["n"]) for c in codes},
        "replayed": rows,
        "skipped": sum(int(a["skipped"]) for a in answers),
        "requests": len(answers),
        "request_s": request_s,
        "wall": wall,
        "floor": floor,
        "calls": calls,
        "floor_calls": floor_calls,
        "done": int(done),
        "in_list": in_list,
        "worker_cpu_s": worker_cpu,
        "again_replayed": int(again["replayed"]),
        "again_s": again_s,
        "again_calls": again_calls,
    }


def report(r: dict[str, Any]) -> None:
    print(f"# dead-letter replay — {machine()}")
    print(
        f"{r['contacts']} contacts → {r['dead']} outbox dead letters (reject codes {r['codes']}); "
        f"replayed {r['replayed']}, skipped {r['skipped']}, in {r['requests']} request(s)"
    )
    over = r["wall"] - r["floor"]
    ok = (
        r["calls"] == r["floor_calls"]
        and over <= 1.0
        and r["done"] >= r["replayed"]
        and r["in_list"] >= r["replayed"]
        and r["again_replayed"] == 0
        and r["again_calls"] == 0
    )
    print(
        f"request(s) {r['request_s'] * 1000:.0f} ms; until every row pushed {r['wall']:.2f} s; floor {r['floor']:.2f} s "
        f"({r['floor_calls']} calls at {UNI_PER_MIN}/min); wall − floor {over:.2f} s; "
        f"ratio {r['wall'] / r['floor']:.1f}; import calls {r['calls']}; worker CPU {r['worker_cpu_s']:.2f} s"
    )
    print(f"outbox rows done {r['done']}, Unisender holds {r['in_list']} in the list")
    print(
        f"replay again: {r['again_replayed']} replayed in {r['again_s'] * 1000:.0f} ms, {r['again_calls']} import calls"
    )
    print(
        f"verdict: {verdict(ok)} (calls = ceil(rows / 500), wall − floor ≤ 1 s, all landed, second replay a no-op)"
    )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", type=int, default=850)
    p.add_argument("--settle", type=float, default=61.0, help="pause before the replay (Unisender's window)")
    p.add_argument("--within", type=float, default=600.0, help="give up on a stage after this many seconds")
    args = p.parse_args(argv)
    use_uvloop()
    report(asyncio.run(run(args.contacts, args.settle, args.within)))


if __name__ == "__main__":
    main()
