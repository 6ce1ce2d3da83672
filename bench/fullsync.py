"""Full sync wall time against the rate-limit floor, with the sandboxes limited like the real services.

Kommo sandbox: 7 req/s per integration, 250 contacts per page; Unisender sandbox: 1200 calls/min, 500 rows per
import; the service's client-side budgets (CONTACTSYNC_KOMMO_RATE_PER_SECOND / _UNISENDER_CALLS_PER_MINUTE)
match. ``--scale 10`` multiplies both sides by ten. Floor = max(pages / rate, imports / (calls per second)) with
pages = ceil(contacts / 250) and imports = ceil(addresses / 500); wall time runs from ``POST /sync/contacts``
until the run is done and the outbox holds nothing pending.

``--spec``: the account is seeded with a value in every custom-field type, its contacts get tags
(``bench.spec.TAG_SHARES``) and it syncs under the 10-field / 3-list spec (``bench.spec.mapped_spec``), so every
pushed row carries ten fields, a phone for half of them and three list columns; ``--baseline`` also runs the old
default spec (name only, one list) at the same sizes, each size's two runs back to back.

    .venv/bin/python -m bench.fullsync [--contacts 10000] [--scales 1,10] [--spec [--baseline]]

Targets: wall / floor ≤ 1.10; Kommo ``max_calls_in_1s`` ≤ the limit; no 429 from either sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.common import (
    bench_stack,
    machine,
    proc_cpu_seconds,
    proc_status,
    start_py_spy,
    stop_py_spy,
    use_uvloop,
    verdict,
)
from bench.processes import real_limits


async def run_sync(
    contacts: int, scale: float, *, within: float = 900.0, profile: str | None = None, spec: bool = False
) -> dict[str, Any]:
    """One fresh stack, ``contacts`` seeded, one full sync (under the mapped spec with ``spec``); returns
    timings, calls, 429s and worker memory."""
    from bench.spec import map_account
    from sandbox.kommo import KommoSandboxConfig
    from sandbox.unisender import UnisenderSandboxConfig
    from tests.support.e2e import connect_account, expected_unisender, kommo_contacts

    kommo_rps = 7 * scale
    uni_per_min = 1200 * scale
    kommo_kw, unisender_kw, env = real_limits(scale)
    async with bench_stack(
        kommo_config=KommoSandboxConfig(**kommo_kw),
        unisender_config=UnisenderSandboxConfig(**unisender_kw),
        extra_env=env,
    ) as bs:
        st = bs.stack
        account = await connect_account(st, contacts=contacts, seed=11, custom_fields=spec)
        if spec:
            await map_account(st, account, seed=11)
        addresses = len(expected_unisender(await kommo_contacts(st, account)))
        assert bs.worker_proc is not None
        wpid = bs.worker_proc.pid
        rss_before = proc_status(wpid, "VmRSS")
        await asyncio.sleep(1.2)  # let the connect's own Kommo calls leave the 1-s window
        await st.kommo.delete("/_sandbox/stats")
        uni_before = (await st.unisender.get("/_sandbox/stats")).json()
        conn = await asyncpg.connect(bs.cfg.dsn)
        spy = None
        if profile:
            spy = start_py_spy(wpid, profile, rate=50)  # the worker for the whole sync
            await asyncio.sleep(1.0)
        try:
            cpu0 = proc_cpu_seconds(wpid)
            t0 = time.monotonic()
            r = await st.api.post("/sync/contacts", headers=st.admin_headers, json={"id": account.account_id})
            assert r.status_code == 202, r.text
            run_id = r.json()["run_id"]
            peak_rss = 0
            while True:
                row = await conn.fetchrow(
                    "SELECT (SELECT status FROM sync_run WHERE id=$1) AS run,"
                    " (SELECT count(*) FROM outbox WHERE status='pending') AS pending",
                    run_id,
                )
                peak_rss = max(peak_rss, proc_status(wpid, "VmRSS"))
                if row["run"] in ("done", "failed") and row["pending"] == 0:
                    break
                if time.monotonic() - t0 > within:
                    raise RuntimeError(f"full sync of {contacts} not done within {within} s: {dict(row)}")
                await asyncio.sleep(0.05)
            wall = time.monotonic() - t0
            worker_cpu = proc_cpu_seconds(wpid) - cpu0
            pushed = await conn.fetchval("SELECT count(*) FROM outbox WHERE status='done'")
        finally:
            await conn.close()
            if spy is not None:
                await stop_py_spy(spy)
        kstats = (await st.kommo.get("/_sandbox/stats")).json()
        ustats = (await st.unisender.get("/_sandbox/stats")).json()
        hwm = proc_status(wpid, "VmHWM")
    imports = ustats["calls"].get("importContacts", 0) - uni_before["calls"].get("importContacts", 0)
    uni_429 = sum(v for k, v in ustats["errors"].items() if "limit" in k) - sum(
        v for k, v in uni_before["errors"].items() if "limit" in k
    )
    pages = math.ceil(contacts / 250)
    floor = max(pages / kommo_rps, math.ceil(addresses / 500) / (uni_per_min / 60))
    return {
        "contacts": contacts,
        "scale": scale,
        "spec": "10 fields / 3 lists" if spec else "default",
        "status": row["run"],
        "wall": wall,
        "floor": floor,
        "ratio": wall / floor,
        "pages": pages,
        "kommo_calls": kstats["total_calls"],
        "kommo_list_calls": kstats["calls"].get("GET /api/v4/contacts", 0),
        "max_calls_in_1s": max(kstats["max_calls_in_1s"].values(), default=0),
        "kommo_429": kstats["rate_limited"],
        "addresses": addresses,
        "pushed": pushed,
        "imports": imports,
        "unisender_429": uni_429,
        "worker_rss_before_kb": rss_before,
        "worker_peak_rss_kb": peak_rss,
        "worker_hwm_kb": hwm,
        "worker_cpu_s": worker_cpu,
    }


def report(results: list[dict[str, Any]]) -> None:
    print(f"# full sync — {machine()}")
    print(
        f"{'spec':>19} {'contacts':>8} {'scale':>5} | {'wall s':>7} {'floor s':>7} {'ratio':>6} | {'pages':>5} "
        f"{'GET list':>8} {'kommo':>6} {'max/1s':>6} {'429':>4} | {'addrs':>7} {'pushed':>7} "
        f"{'imports':>7} {'/500':>5} {'429':>4} | {'cpu s':>6} | verdict"
    )
    for r in results:
        ok = r["ratio"] <= 1.10 and r["max_calls_in_1s"] <= 7 * r["scale"] and not r["kommo_429"]
        ok = ok and not r["unisender_429"] and r["status"] == "done"
        # imports / ceil(addresses / 500): how many calls the push took per 500-row batch of the floor (rows
        # needing different columns travel in separate calls).
        per_batch = r["imports"] / max(1, math.ceil(r["addresses"] / 500))
        print(
            f"{r['spec']:>19} {r['contacts']:>8} {r['scale']:>5g} | {r['wall']:7.2f} {r['floor']:7.2f} "
            f"{r['ratio']:6.2f} | {r['pages']:>5} {r['kommo_list_calls']:>8} {r['kommo_calls']:>6} "
            f"{r['max_calls_in_1s']:>6} {r['kommo_429']:>4} | {r['addresses']:>7} {r['pushed']:>7} "
            f"{r['imports']:>7} {per_batch:5.2f} {r['unisender_429']:>4} | {r['worker_cpu_s']:6.2f} | "
            f"{verdict(ok)} (≤ 1.10, max/1s ≤ {7 * r['scale']:g}, no 429)"
        )
    pairs = {(r["contacts"], r["scale"]): r for r in results if r["spec"] == "default"}
    for r in results:
        base = pairs.get((r["contacts"], r["scale"]))
        if r["spec"] != "default" and base is not None:
            print(
                f"{r['contacts']} ×{r['scale']:g}: spec / default wall {r['wall'] / base['wall']:.2f}, "
                f"worker cpu {r['worker_cpu_s'] / base['worker_cpu_s']:.2f}, imports {r['imports']} / "
                f"{base['imports']}"
            )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", default="10000", help="comma-separated sizes, e.g. 10000,100000")
    p.add_argument("--scales", default="1,10", help="limit multipliers, e.g. 1,10")
    p.add_argument("--profile", help="py-spy raw output file for the worker (last run wins)")
    p.add_argument("--spec", action="store_true", help="sync under the 10-field / 3-list spec")
    p.add_argument(
        "--baseline", action="store_true", help="with --spec: also the default spec, back to back per size"
    )
    args = p.parse_args(argv)
    use_uvloop()
    modes = [False, True] if args.spec and args.baseline else [args.spec]
    results = []
    for n in (int(x) for x in args.contacts.split(",")):
        for s in (float(x) for x in args.scales.split(",")):
            for spec in modes:
                results.append(asyncio.run(run_sync(n, s, profile=args.profile, spec=spec)))
                report(results[-1:])  # as it goes: a long series still leaves figures if it is cut short
    print()
    report(results)


if __name__ == "__main__":
    main()
