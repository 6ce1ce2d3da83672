"""A spec change's push against the Unisender floor for the addresses it changed, and the lag of live changes
made while it runs.

One stack at the real limits (Kommo 7 req/s, 250 per page; Unisender 1,200 calls/min, 500 rows per import;
the service's budgets equal). ``--contacts`` seeded with a value in every custom-field type and tags
(``bench.spec.TAG_SHARES``, plus ``gold`` and ``silver`` each on ``--share`` of the contacts, independently),
fully synced under spec A (``bench.spec.mapped_spec``: 10 fields, lists everyone / VIP by tag ``vip`` / Warm by
``lead`` or ``customer``). Then two spec changes, one after the other, each a fresh ``PUT .../mapping``:

1. A → B: the one-tag list is Gold by tag ``gold`` instead of VIP (a new list). Exactly the addresses whose
   owner is tagged ``gold`` change (they join Gold; VIP keeps its members, a list no longer mapped is left
   alone). No live changes meanwhile.
2. B → C: the same with Silver by tag ``silver``; meanwhile, renames at ``--live-rate`` per second of contacts
   not tagged ``silver`` (so their pushes are not part of the remap's changes) through the Kommo sandbox,
   whose webhooks post them; their lag is rename → Unisender taking the row with the new name.

Per phase: wall time from the PUT until the remap run is done and no outbox row is pending; the addresses
changed (the run's ``counters.changed``, the count expected from the Kommo sandbox's records, and outbox rows
with ``pushed_at`` after the PUT); importContacts calls; floor = ceil(changed / 500) calls at 1,200 a minute
= calls / 20 seconds. Unisender's limit is a sliding 60-s window, so fewer than 1,200 calls may go faster
than that steady rate: a ratio below 1 is possible and then says the service kept ahead of the nominal rate.

    .venv/bin/python -m bench.remap [--contacts 50000] [--share 0.8] [--live-rate 20]

Targets: wall / floor ≤ 1.2 for the spec change's push; live changes during it not blocked (lag reported).
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
    pct,
    proc_cpu_seconds,
    start_py_spy,
    stop_py_spy,
    use_uvloop,
    verdict,
)
from bench.processes import real_limits
from bench.spec import (
    TAG_SHARES,
    drain_waits,
    field_ids,
    map_account,
    mapped_spec,
    named,
    put_spec,
    sole_holders,
    watch_ledger,
)

UNI_PER_MIN = 1200
KOMMO_RPS = 7


def owners_tagged(kacc: Any, tag: str) -> int:
    """Addresses whose owner (the most recently updated live contact holding it; ties by id, as the service
    decides) carries ``tag``: what a list rule over that tag changes. Counted from the sandbox's records."""
    from app.sync.mapping import contact_emails

    email_field = kacc.field_by_code("EMAIL").id
    owner: dict[str, Any] = {}
    for c in kacc.iter_live():
        for e in contact_emails([v for fid, vals in c.fields if fid == email_field for v, _ in vals]):
            cur = owner.get(e)
            if cur is None or (c.updated_at, c.id) > (cur.updated_at, cur.id):
                owner[e] = c
    t = kacc.tags_by_name.get(tag)
    return 0 if t is None else sum(1 for c in owner.values() if t.id in c.tags)


def addresses_of(kacc: Any, cids: set[int]) -> int:
    """How many addresses these contacts hold (a rename changes every one of them)."""
    from app.sync.mapping import contact_emails

    email_field = kacc.field_by_code("EMAIL").id
    return sum(
        len(
            contact_emails(
                [v for fid, vals in kacc.contacts[cid].fields if fid == email_field for v, _ in vals]
            )
        )
        for cid in cids
    )


async def _phase(
    bs: Any,
    account: Any,
    conn: Any,
    spec: dict[str, Any],
    tag: str,
    live_rate: float,
    within: float,
    profile: str | None = None,
) -> dict[str, Any]:
    """PUT ``spec``, optionally stream renames meanwhile, until the run is done and the outbox drained."""
    st = bs.stack
    kstate = st.kommo_app.state.kommo
    kacc = kstate.accounts[account.subdomain]
    expected = owners_tagged(kacc, tag)
    t = kacc.tags_by_name.get(tag)
    targets = [(cid, e) for cid, e in sole_holders(kacc) if t is None or t.id not in kacc.contacts[cid].tags]
    ledger = watch_ledger(st, account.api_key)
    waiting = ledger.waiting
    uni = st.unisender_app.state.unisender.stats
    calls0 = uni.calls.get("importContacts", 0)
    limited0 = sum(v for k, v in uni.errors.items() if "limit" in k)
    wpid = bs.worker_proc.pid
    spy = None
    if profile:
        spy = start_py_spy(wpid, profile)  # the worker for this phase
        await asyncio.sleep(1.0)
    cpu0 = proc_cpu_seconds(wpid)
    wall0 = time.time()
    t0 = time.monotonic()
    saved = await put_spec(st, account.account_id, spec)
    put_s = time.monotonic() - t0
    run_id = saved["run_id"]
    stop = asyncio.Event()
    renamed: set[int] = set()

    async def stream() -> int:
        # Renames at a steady rate until the remap is drained (bounded by ``within``).
        n = 0
        start = time.monotonic()
        while not stop.is_set() and n < int(live_rate * within):
            delay = start + n / live_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            cid, email = targets[(n * 7919) % len(targets)]  # a stride spreads them over the address ids
            name = f"Live {n}"
            waiting[email] = (time.monotonic(), named(name))
            renamed.add(cid)
            _, _, errors = kstate.update_contacts(kacc, [{"id": cid, "name": name}])
            assert not errors, errors
            n += 1
        return n

    streamer = asyncio.create_task(stream()) if live_rate > 0 else None
    walk_s: float | None = None
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT (SELECT status FROM sync_run WHERE id=$1) AS run,"
                " (SELECT count(*) FROM outbox WHERE status='pending') AS pending",
                run_id,
            )
            if row["run"] in ("done", "failed") and walk_s is None:
                walk_s = time.monotonic() - t0
            if walk_s is not None and row["pending"] == 0:
                break
            if time.monotonic() - t0 > within:
                raise RuntimeError(f"remap not drained within {within} s: {dict(row)}")
            await asyncio.sleep(0.05)
        wall = time.monotonic() - t0
    finally:
        stop.set()
        live_changes = await streamer if streamer is not None else 0
    worker_cpu = proc_cpu_seconds(wpid) - cpu0
    if spy is not None:
        await stop_py_spy(spy)
    await drain_waits(waiting, 30)
    calls = uni.calls.get("importContacts", 0) - calls0
    limited = sum(v for k, v in uni.errors.items() if "limit" in k) - limited0
    run = (await st.api.get(f"/sync/runs/{run_id}", headers=st.admin_headers)).json()
    pushed_rows = await conn.fetchval(
        "SELECT count(*) FROM outbox WHERE pushed_at >= to_timestamp($1)", wall0
    )
    rejected = await conn.fetchval("SELECT count(*) FROM outbox WHERE status='rejected'")
    changed = int(run["counters"]["changed"])
    floor_calls = math.ceil(changed / 500)
    floor = floor_calls / (UNI_PER_MIN / 60)
    lags = ledger.seen
    return {
        "tag": tag,
        "status": run["status"],
        "addresses": int(run["counters"].get("fetched", 0)),
        "changed": changed,
        "expected": expected,
        "pushed_rows": pushed_rows,
        "renamed": addresses_of(kacc, renamed),
        "rejected": rejected,
        "calls": calls,
        "floor_calls": floor_calls,
        "unisender_429": limited,
        "put_s": put_s,
        "walk_s": walk_s,
        "wall": wall,
        "floor": floor,
        "ratio": wall / floor if floor else float("nan"),
        "worker_cpu_s": worker_cpu,
        "live_rate": live_rate,
        "live_changes": live_changes,
        "live_observed": len(lags),
        "live_missing": len(waiting),
        "lag_p50": pct(lags, 50),
        "lag_p99": pct(lags, 99),
        "lag_max": max(lags, default=float("nan")),
    }


async def run(
    contacts: int,
    share: float,
    live_rate: float,
    within: float,
    settle: float = 61.0,
    profile: str | None = None,
) -> dict[str, Any]:
    from sandbox.kommo import KommoSandboxConfig
    from sandbox.unisender import UnisenderSandboxConfig
    from tests.support.e2e import connect_account, wait_quiet

    kommo_kw, unisender_kw, env = real_limits()
    async with bench_stack(
        kommo_config=KommoSandboxConfig(
            **kommo_kw, webhook_retry_delays=(0.2, 0.5, 1.0), delivery_concurrency=4
        ),
        unisender_config=UnisenderSandboxConfig(**unisender_kw),
        extra_env=env,
    ) as bs:
        st = bs.stack
        account = await connect_account(st, contacts=contacts, seed=13, custom_fields=True)
        await map_account(st, account, seed=13, shares={**TAG_SHARES, "gold": share, "silver": share})
        await asyncio.sleep(1.2)  # let the API's Kommo calls (connect, PUT) leave Kommo's 1-s window
        t = time.monotonic()
        r = await st.api.post("/sync/contacts", headers=st.admin_headers, json={"id": account.account_id})
        assert r.status_code == 202, r.text
        await wait_quiet(st, account, within=within)
        sync_s = time.monotonic() - t
        # Unisender's 60-s window still holds the full sync's calls: let it empty, so each phase starts from
        # the same full budget (``--settle 0`` when the calls of sync and phases fit one window anyway).
        await asyncio.sleep(settle)
        ids = field_ids(st.kommo_app.state.kommo.accounts[account.subdomain])
        conn = await asyncpg.connect(bs.cfg.dsn)
        try:
            b = await _phase(
                bs,
                account,
                conn,
                mapped_spec(account.list_id, ids, segment=("Gold", "gold")),
                "gold",
                0,
                within,
                profile,
            )
            await asyncio.sleep(settle)
            c = await _phase(
                bs,
                account,
                conn,
                mapped_spec(account.list_id, ids, segment=("Silver", "silver")),
                "silver",
                live_rate,
                within,
            )
        finally:
            await conn.close()
    return {"contacts": contacts, "share": share, "full_sync_s": sync_s, "phases": [b, c]}


def report(r: dict[str, Any]) -> None:
    print(f"# spec change (remap) — {machine()}")
    print(
        f"{r['contacts']} contacts, gold and silver each on {r['share']:.0%} of them; full sync under spec A "
        f"took {r['full_sync_s']:.1f} s"
    )
    print(
        f"{'phase':<22} | {'addrs':>6} {'changed':>7} {'expect':>6} {'pushed':>6} {'rej':>4} | {'calls':>5} "
        f"{'floor':>5} {'429':>4} | {'PUT s':>5} {'walk s':>6} {'wall s':>6} {'floor s':>7} {'ratio':>5} | "
        f"{'cpu s':>5} | verdict"
    )
    for p in r["phases"]:
        name = f"→ {p['tag']}" + (f" + {p['live_rate']:g}/s live" if p["live_rate"] else "")
        # A live rename of an address the walk reaches before its push is a difference the run counts too, and
        # so is an address Unisender refused before (it holds nothing of ours to compare with).
        exact = p["expected"] <= p["changed"] <= p["expected"] + p["renamed"] + p["rejected"]
        ok = p["ratio"] <= 1.2 and p["status"] == "done" and exact
        print(
            f"{name:<22} | {p['addresses']:>6} {p['changed']:>7} {p['expected']:>6} {p['pushed_rows']:>6} "
            f"{p['rejected']:>4} | {p['calls']:>5} {p['floor_calls']:>5} {p['unisender_429']:>4} | "
            f"{p['put_s']:5.2f} {p['walk_s']:6.2f} {p['wall']:6.2f} {p['floor']:7.2f} {p['ratio']:5.2f} | "
            f"{p['worker_cpu_s']:5.1f} | {verdict(ok)} (≤ 1.2, changed = expected [+ renamed, rejected])"
        )
    for p in r["phases"]:
        if p["live_rate"]:
            print(
                f"live renames during → {p['tag']}: {p['live_changes']} at {p['live_rate']:g}/s "
                f"({p['renamed']} addresses of renamed contacts), observed {p['live_observed']}, missing {p['live_missing']}; "
                f"lag p50 {p['lag_p50'] * 1000:.0f} ms, p99 {p['lag_p99'] * 1000:.0f} ms, "
                f"max {p['lag_max'] * 1000:.0f} ms (the remap's wall time: {p['wall']:.1f} s)"
            )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", type=int, default=50000)
    p.add_argument("--share", type=float, default=0.8, help="contacts tagged gold (and, apart, silver)")
    p.add_argument("--live-rate", type=float, default=20.0, help="renames per second during the 2nd change")
    p.add_argument("--within", type=float, default=600.0, help="give up on a stage after this many seconds")
    p.add_argument("--settle", type=float, default=61.0, help="pause before each phase (Unisender's window)")
    p.add_argument("--profile", help="py-spy raw output file: the worker during the first change")
    args = p.parse_args(argv)
    use_uvloop()
    report(
        asyncio.run(run(args.contacts, args.share, args.live_rate, args.within, args.settle, args.profile))
    )


if __name__ == "__main__":
    main()
