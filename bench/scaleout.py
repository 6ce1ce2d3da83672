"""Scale-out: the service with 1, 2 and 4 worker processes (2 API processes behind a round-robin proxy), side
by side in one run, on 50 accounts of ONE public Kommo integration, each with its own Unisender key.

Per configuration (a fresh stack each): ``--small`` accounts are connected and fully synced, then receive a
live stream of renames (``--rate`` a second in all, made in the Kommo sandbox's state so its real webhook
delivery posts them); after ``--warmup`` s the ``--big`` accounts start a full sync at once, and the stream
goes on until their runs are done and their outbox is empty. Sandboxes at the real limits, the service's
budgets equal (``bench.processes.real_limits``): 7 Kommo calls/s for all accounts, 1,200 Unisender calls/min a key.

Figures, for the big syncs' phase (their POSTs → done and pushed): its wall time; 429s and the most Kommo calls
in any second; rows Unisender accepted (big syncs and stream); the CPU all worker processes used (/proc) and
rows per worker CPU-second; live lag (rename in Kommo → Unisender accepting the row with that name) of the
renames made in it (and before it: idle); at the end every account's mirror is checked exact.

    .venv/bin/python -m bench.scaleout [--workers 1,2,4] [--small 47] [--big 3] [--big-contacts N] [--rate R]

Targets: 0 429s; ≤ 7 Kommo calls in any second; rows per worker CPU-second with N workers ≥ 0.8 × with 1;
live lag p99 ≤ 1 s during the big syncs; every mirror exact.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import random
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from bench.common import (
    REDIS_URL,
    ServiceConfig,
    flush_redis,
    fresh_database,
    machine,
    migrate,
    pct,
    proc_cpu_seconds,
    service_process,
    start_py_spy,
    stop_py_spy,
    use_uvloop,
    verdict,
)
from bench.processes import real_limits, round_robin_proxy, worker_processes

KOMMO_LIMIT = 7
# Webhook retries: bench.lag's quick ones, then two more as Kommo's own come (5 s, 30 s, ...), so a body the
# overloaded service answered late is delivered late (a long lag) instead of lost; 4 bodies in flight a hook.
RETRIES = (0.2, 0.5, 1.0, 5.0, 30.0)


class LagLedger(list):  # type: ignore[type-arg]
    """A Unisender account's import ledger that notes when an awaited name arrives. ``waiting`` is shared by
    all small accounts and keyed by (api key, address): two accounts may hold the same address."""

    def __init__(self, key: str, waiting: dict[tuple[str, str], tuple[float, str]], seen: list[Any]) -> None:
        super().__init__()
        self.key, self.waiting, self.seen = key, waiting, seen

    def append(self, entry: Any) -> None:
        super().append(entry)
        wait = self.waiting.get((self.key, entry.get("email") or ""))
        if wait is not None and (entry.get("data") or {}).get("Name") == wait[1]:
            del self.waiting[(self.key, entry["email"])]
            self.seen.append((wait[0], time.monotonic() - wait[0]))


@dataclass
class Scene:
    """One configuration's stack and accounts."""

    st: Any  # tests.conftest.Stack
    cfg: ServiceConfig
    api_procs: list[subprocess.Popen[bytes]]
    worker_procs: list[subprocess.Popen[bytes]]
    small: list[Any] = field(default_factory=list)  # tests.support.e2e.Account
    big: list[Any] = field(default_factory=list)


@contextlib.asynccontextmanager
async def scene(workers: int, apis: int, roles: list[str] | None = None) -> AsyncIterator[Scene]:
    """Both sandboxes at the real limits (in-process), a migrated fresh database, ``apis`` API processes on
    one public URL (the proxy) and ``workers`` worker processes, all on the same settings."""
    from app.servers import free_port, serve_in_background
    from sandbox.kommo import KommoSandboxConfig, create_kommo_sandbox
    from sandbox.unisender import UnisenderSandboxConfig, create_unisender_sandbox
    from tests.conftest import Stack

    kommo_kw, unisender_kw, env = real_limits()
    kcfg = KommoSandboxConfig(**kommo_kw, webhook_retry_delays=RETRIES, delivery_concurrency=4)
    await flush_redis()
    kommo_app = create_kommo_sandbox(kcfg)
    unisender_app = create_unisender_sandbox(UnisenderSandboxConfig(**unisender_kw))
    api_ports = [free_port() for _ in range(apis)]
    async with (
        fresh_database() as dsn,
        serve_in_background(kommo_app) as kommo_url,
        serve_in_background(unisender_app) as unisender_url,
        round_robin_proxy(api_ports) as proxy_port,
    ):
        cfg = ServiceConfig(
            dsn,
            f"http://127.0.0.1:{proxy_port}",
            kommo_url,
            unisender_url,
            # Each process's share of a budget while Redis does not answer: 1/N of it, as the README asks
            # of N processes (the default 0.5 is for two; six at 0.5 would spend 3 × 7 calls/s in an outage).
            extra=env | {"CONTACTSYNC_BUDGET_FALLBACK_SHARE": f"{1 / (workers + apis):.4f}"},
        )
        await asyncio.to_thread(migrate, cfg)
        async with contextlib.AsyncExitStack() as es:
            api_procs = [await es.enter_async_context(service_process(p, cfg.env())) for p in api_ports]
            clients = [
                await es.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60))
                for url in (cfg.public_url, kommo_url, unisender_url)
            ]
            admin = {"Authorization": f"Bearer {cfg.admin_token}"}
            st = Stack(cfg.settings(), clients[0], clients[1], clients[2], kommo_app, unisender_app, admin)
            worker_procs = await es.enter_async_context(worker_processes(cfg, workers, roles))
            yield Scene(st, cfg, api_procs, worker_procs)


async def start_sync(st: Any, account: Any) -> str:
    r = await st.api.post("/sync/contacts", headers=st.admin_headers, json={"id": account.account_id})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


async def setup(sc: Scene, args: argparse.Namespace) -> None:
    """Connect every account through the real OAuth flow on one sandbox integration; fully sync the small
    ones (so their mirror is whole before the stream), leave the big ones to the measured phase."""
    from tests.support.e2e import connect_account, wait_quiet

    st = sc.st
    redirect = f"{st.settings.public_url}/auth/callback"
    integ = (await st.kommo.post("/_sandbox/integrations", json={"redirect_uri": redirect})).json()
    low, high = (int(x) for x in args.small_contacts.split(","))
    rng = random.Random(f"scaleout:{args.small}")
    sizes = [(f"small{i:02d}", rng.randint(low, high)) for i in range(args.small)]
    sizes += [(f"big{i}", args.big_contacts) for i in range(args.big)]
    for i, (sub, n) in enumerate(sizes):
        account = await connect_account(st, subdomain=sub, contacts=n, seed=100 + i, integration=integ)
        (sc.small if i < args.small else sc.big).append(account)
    for account in sc.small:
        await start_sync(st, account)
    await wait_quiet(st, sc.small[0], within=300)  # quiet is global: every small sync done and pushed


async def stream(
    sc: Scene,
    rate: float,
    stop: asyncio.Event,
    waiting: dict[tuple[str, str], tuple[float, str]],
    limit: int,
) -> int:
    """Renames at ``rate`` a second over the small accounts' contacts (those that alone hold their
    addresses, so each rename must show on Unisender), until ``stop`` or ``limit`` changes; returns the count."""
    from bench.spec import sole_holders

    kstate = sc.st.kommo_app.state.kommo
    targets: list[tuple[str, Any, int, str]] = []
    for account in sc.small:
        kacc = kstate.accounts[account.subdomain]
        targets += [(account.api_key, kacc, cid, email) for cid, email in sole_holders(kacc)]
    random.Random(7).shuffle(targets)  # consecutive changes land in different accounts
    t0 = time.monotonic()
    i = 0
    while i < limit and not stop.is_set():
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            continue
        key, kacc, cid, email = targets[i % len(targets)]
        name = f"Scale {i}"
        # A later rename of the same contact supersedes one still in flight (its wait is replaced).
        waiting[(key, email)] = (time.monotonic(), name)
        _, _, errors = kstate.update_contacts(kacc, [{"id": cid, "name": name}])
        assert not errors, errors
        i += 1
    return i


def ledger_rows(sc: Scene) -> int:  # rows Unisender has accepted so far, all accounts
    return sum(len(a.ledger) for a in sc.st.unisender_app.state.unisender.accounts.values())


async def wait_big(conn: Any, run_ids: list[str], account_ids: list[int], within: float) -> str:
    """Until the big runs ended and their accounts' outbox holds nothing pending; returns 'done' or the
    first other status."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = await conn.fetchrow(
            "SELECT (SELECT array_agg(status::text) FROM sync_run WHERE id::text = ANY($1::text[])) AS runs,"
            " (SELECT count(*) FROM outbox WHERE status = 'pending' AND account_id = ANY($2::bigint[])) AS ob",
            run_ids,
            account_ids,
        )
        runs = list(row["runs"] or [])
        if len(runs) == len(run_ids) and all(s in ("done", "failed") for s in runs) and row["ob"] == 0:
            return next((s for s in runs if s != "done"), "done")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"big syncs not done within {within} s")


def _uni_limited(stats: dict[str, Any]) -> int:
    return sum(v for k, v in stats["errors"].items() if "limit" in k)


async def verify(sc: Scene) -> tuple[int, list[str]]:
    """Every account's mirror against Kommo (``assert_mirror_exact``); (addresses compared, failures)."""
    from tests.support.e2e import assert_mirror_exact

    compared, failures = 0, []
    for account in sc.small + sc.big:
        try:
            compared += await assert_mirror_exact(sc.st, account)
        except AssertionError as exc:
            failures.append(f"{account.subdomain}: {str(exc)[:200]}")
    return compared, failures


async def redis_commands() -> dict[str, int]:
    """Commands Redis has run, by name (server-wide: run the bench alone on its Redis)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)  # type: ignore[no-untyped-call]
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}


async def event_stages(conn: Any, account_ids: list[int], seconds: float) -> dict[str, float]:
    """The live stream's webhook bodies stored in the last ``seconds``: stored → handled by a worker, ms."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM handled_at - received_at)) AS p50,"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM handled_at - received_at)) AS p99"
        " FROM webhook_event WHERE source = 'kommo' AND account_id = ANY($1::bigint[])"
        " AND received_at > now() - make_interval(secs => $2) AND handled_at IS NOT NULL",
        account_ids,
        seconds,
    )
    return {"n": row["n"], "p50": float(row["p50"] or "nan"), "p99": float(row["p99"] or "nan")}


async def pg_counts(conn: Any) -> dict[str, int]:
    """Transactions committed and rows written in the bench's database (PostgreSQL's own counters)."""
    row = await conn.fetchrow(
        "SELECT pg_stat_force_next_flush(), xact_commit, tup_inserted, tup_updated, tup_deleted"
        " FROM pg_stat_database WHERE datname = current_database()"
    )
    return {
        "commits": row["xact_commit"],
        "rows_written": row["tup_inserted"] + row["tup_updated"] + row["tup_deleted"],
    }


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def start_profiles(pids: list[int], folder: str | None, workers: int) -> list[subprocess.Popen[bytes]]:
    """py-spy on each worker for the measured phase: raw folded stacks, one file each."""
    if not folder:
        return []
    return [start_py_spy(pid, f"{folder}/scaleout-{workers}w-{i}.txt", rate=50) for i, pid in enumerate(pids)]


async def stop_profiles(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        await stop_py_spy(spy)


async def run_config(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh stack with the worker processes ``config`` names (a count, or roles joined by ``+``, e.g.
    ``live+bulk``): setup, the stream with the big syncs, checks."""
    roles = config.split("+") if not config.isdigit() else None
    workers = len(roles) if roles else int(config)
    from tests.support.e2e import wait_quiet

    async with scene(workers, args.apis, roles) as sc:
        st = sc.st
        # Stats read in-process: an HTTP read could meet a keep-alive connection the sandbox just closed.
        kstate, ustate = st.kommo_app.state.kommo, st.unisender_app.state.unisender
        t_setup = time.monotonic()
        await setup(sc, args)
        gc.freeze()  # the seeded sandbox state is permanent: this process's collections need not walk it
        setup_s = time.monotonic() - t_setup
        setup_kommo = kstate.stats.as_dict()
        uni0 = ustate.stats.as_json()
        waiting: dict[tuple[str, str], tuple[float, str]] = {}
        seen: list[tuple[float, float]] = []
        for account in sc.small:
            uacc = st.unisender_app.state.unisender.accounts[account.api_key]
            ledger = LagLedger(account.api_key, waiting, seen)
            ledger.extend(uacc.ledger)
            uacc.ledger = ledger
        await asyncio.sleep(1.2)  # the setup's own Kommo calls leave the 1-s window before stats restart
        kstate.stats = type(kstate.stats)()
        stop = asyncio.Event()
        limit = int(args.rate * (args.warmup + args.within + 10))
        streamer = asyncio.create_task(stream(sc, args.rate, stop, waiting, limit))
        conn = await asyncpg.connect(sc.cfg.dsn)
        try:
            await asyncio.sleep(args.warmup)
            pids = [p.pid for p in sc.worker_procs]
            api_pids = [p.pid for p in sc.api_procs]
            spies = start_profiles(pids, args.profile, workers)
            redis0, pg0 = await redis_commands(), await pg_counts(conn)
            cpu0 = [proc_cpu_seconds(p) for p in pids]
            api0 = sum(proc_cpu_seconds(p) for p in api_pids)
            rows0 = ledger_rows(sc)
            t0 = time.monotonic()
            run_ids = [await start_sync(st, a) for a in sc.big]
            status = await wait_big(conn, run_ids, [a.account_id for a in sc.big], args.within)
            t1 = time.monotonic()
            cpu = [proc_cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
            api_cpu = sum(proc_cpu_seconds(p) for p in api_pids) - api0
            rows = ledger_rows(sc) - rows0
            stages = await event_stages(conn, [a.account_id for a in sc.small], t1 - t0)
            redis_used = _delta(await redis_commands(), redis0)
            pg_used = _delta(await pg_counts(conn), pg0)
            await stop_profiles(spies)
            kstats = kstate.stats.as_dict()
            ustats = ustate.stats.as_json()
        finally:
            stop.set()
            changes = await asyncio.wait_for(streamer, timeout=10)
            await conn.close()
        drain_until = time.monotonic() + sum(RETRIES) + 20
        while waiting and time.monotonic() < drain_until:  # noqa: ASYNC110 (bounded poll of sandbox state)
            await asyncio.sleep(0.05)
        await wait_quiet(st, sc.small[0], within=180)
        compared, failures = await verify(sc)
        final_uni = ustate.stats.as_json()
        final_kommo = kstate.stats.as_dict()
    failed = [d for d in kstate.dispatcher.log if not d["ok"]]  # webhook attempts not answered 2xx in 2 s
    deliveries = {"failed": len(failed), "lost": sum(d["attempt"] > len(RETRIES) for d in failed)}
    deliveries["why"] = dict(Counter(str(d["status"] or d["error"]) for d in failed))
    late_429 = final_kommo["rate_limited"] - kstats["rate_limited"]
    late_429 += _uni_limited(final_uni) - _uni_limited(ustats)
    during = [lag for made, lag in seen if t0 <= made <= t1]
    idle = [lag for made, lag in seen if made < t0]
    big_addresses = sum(
        len(st.unisender_app.state.unisender.accounts[a.api_key].contacts_by_email) for a in sc.big
    )
    pages = sum(math.ceil(args.big_contacts / 250) for _ in sc.big)
    return {
        "workers": workers,
        "label": config,
        "setup_s": setup_s,
        "status": status,
        "wall": t1 - t0,
        "floor": pages / KOMMO_LIMIT,
        "kommo_429": kstats["rate_limited"],
        "max_1s": max(kstats["max_calls_in_1s"].values(), default=0),
        "setup_kommo_429": setup_kommo["rate_limited"],
        "setup_max_1s": max(setup_kommo["max_calls_in_1s"].values(), default=0),
        "uni_429": _uni_limited(ustats) - _uni_limited(uni0),
        **{"late_429": late_429, "deliveries": deliveries},
        "rows": rows,
        "big_addresses": big_addresses,
        "worker_cpu": sum(cpu),
        "per_worker_cpu": cpu,
        "api_cpu": api_cpu,
        "rows_per_cpu": rows / sum(cpu) if sum(cpu) > 0 else float("nan"),
        "redis_commands": redis_used,
        "stages": stages,
        "pg": pg_used,
        **{"changes": changes, "seen": len(seen), "waiting": len(waiting), "during": len(during)},
        "p50": pct(during, 50),
        **{"p99": pct(during, 99), "max": max(during, default=float("nan"))},
        **{"idle_p50": pct(idle, 50), "idle_p99": pct(idle, 99), "idle": len(idle)},
        **{"compared": compared, "failures": failures},
    }


def ms(s: float) -> str:
    return "—" if math.isnan(s) else f"{s * 1000:,.0f}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"# scale-out — {machine()}")
    print(
        f"{args.small} small accounts ({args.small_contacts} contacts) with {args.rate:g} renames/s in "
        f"all; {args.big} big accounts × {args.big_contacts} contacts fully synced meanwhile; one Kommo "
        f"integration; {args.apis} API processes behind a round-robin proxy"
    )
    print(
        "| workers | big syncs wall s (floor) | 429 K / U | max K calls in 1 s | rows pushed (big addresses) "
        "| worker CPU s (per process) | API CPU s | rows / worker CPU-s | vs 1 worker | lag p50 / p99 / max ms "
        "during (n) | idle p50 / p99 ms (n) | exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = next((r for r in results if r["label"] == "1"), None)
    for r in results:
        ratio = r["rows_per_cpu"] / base["rows_per_cpu"] if base else float("nan")
        per = ", ".join(f"{c:.1f}" for c in r["per_worker_cpu"])
        exact = "yes" if not r["failures"] else f"NO ({len(r['failures'])} accounts)"
        print(
            f"| {r['label']} | {r['wall']:.2f} ({r['floor']:.2f}) | {r['kommo_429']} / {r['uni_429']} "
            f"| {r['max_1s']} | {r['rows']:,} ({r['big_addresses']:,}) | {r['worker_cpu']:.2f} ({per}) "
            f"| {r['api_cpu']:.2f} | {r['rows_per_cpu']:,.0f} | {ratio:.2f} "
            f"| {ms(r['p50'])} / {ms(r['p99'])} / {ms(r['max'])} ({r['during']}) "
            f"| {ms(r['idle_p50'])} / {ms(r['idle_p99'])} ({r['idle']}) | {exact}, {r['compared']:,} addresses |"
        )
    print(
        "| workers | Redis commands / row (top) | PostgreSQL commits / row | rows written / row "
        "| live bodies stored → handled p50 / p99 ms (n) |"
    )
    print("|---|---|---|---|---|")
    for r in results:
        rows = max(r["rows"], 1)
        top = sorted(r["redis_commands"].items(), key=lambda kv: -kv[1])[:10]
        redis = ", ".join(f"{name} {calls / rows:.2f}" for name, calls in top)
        total = sum(r["redis_commands"].values()) / rows
        print(
            f"| {r['label']} | {total:.2f} ({redis}) | {r['pg'].get('commits', 0) / rows:.3f} "
            f"| {r['pg'].get('rows_written', 0) / rows:.2f} | {ms(r['stages']['p50'])} / "
            f"{ms(r['stages']['p99'])} ({r['stages']['n']}) |"
        )
    for r in results:
        print(
            f"{r['label']} workers: setup {r['setup_s']:.1f} s (Kommo 429 {r['setup_kommo_429']}, max calls "
            f"in 1 s {r['setup_max_1s']}); big runs {r['status']}; renames made {r['changes']}, seen "
            f"{r['seen']}, still awaited {r['waiting']}; 429s after the measured phase {r['late_429']}; webhook "
            f"attempts failed {r['deliveries']['failed']} {r['deliveries']['why']}, bodies given up "
            f"{r['deliveries']['lost']}"
        )
        for failure in r["failures"][:5]:
            print(f"  mirror NOT exact: {failure}")
    for r in results:
        n = r["label"]
        print(
            f"{n} workers: no provider 429: {verdict(r['kommo_429'] + r['uni_429'] + r['late_429'] == 0)}; "
            f"≤ {KOMMO_LIMIT} Kommo calls in any 1 s: {verdict(r['max_1s'] <= KOMMO_LIMIT)}; "
            f"lag p99 ≤ 1 s during the big syncs: {verdict(r['p99'] <= 1.0)}; "
            f"mirror exact: {verdict(not r['failures'] and r['status'] == 'done')}"
        )
        if base is not None and n != "1":
            ratio = r["rows_per_cpu"] / base["rows_per_cpu"]
            print(
                f"{n} workers: rows per worker CPU-second / 1 worker's = {ratio:.2f} (≥ 0.8: {verdict(ratio >= 0.8)})"
            )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--workers",
        default="1,2,4",
        help="comma-separated worker configurations: a process count (all jobs each), or roles joined by + "
        "(e.g. live+bulk: one process of each)",
    )
    p.add_argument("--apis", type=int, default=2, help="API processes behind the proxy")
    p.add_argument("--small", type=int, default=47, help="small accounts receiving the live stream")
    p.add_argument("--small-contacts", default="20,50", help="fewest,most contacts of a small account")
    p.add_argument("--big", type=int, default=3, help="big accounts fully synced during the stream")
    p.add_argument("--big-contacts", type=int, default=10000, help="contacts of each big account")
    p.add_argument("--rate", type=float, default=30.0, help="renames per second over all small accounts")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of stream before the big syncs start")
    p.add_argument("--within", type=float, default=600.0, help="give up on the big syncs after this many s")
    p.add_argument(
        "--profile", metavar="DIR", help="py-spy each worker during the phase, raw stacks into DIR"
    )
    args = p.parse_args(argv)
    use_uvloop()
    results: list[dict[str, Any]] = []
    for config in args.workers.split(","):
        results.append(asyncio.run(run_config(config, args)))
        report(results[-1:], args)  # as it goes: a series cut short still leaves its figures
        print(flush=True)
    report(results, args)


if __name__ == "__main__":
    main()
