"""Webhook ingest throughput and latency: the real app against a bare asyncpg INSERT baseline, same server.

Each runs as one process on uvloop + httptools, no access log, pinned to core 0: the baseline under plain
uvicorn, the app as ``contactsync serve`` (as deployed, with its connection limits); this load generator runs
on core 1 (PostgreSQL floats). Bodies are real one-contact Kommo ``contacts[update]`` forms produced by the
Kommo sandbox's serializer, each with a unique ``updated_at`` so delivery dedupe never short-circuits.

    .venv/bin/python -m bench.ingest [--seconds 5] [--levels 4,16,64]

Targets (docs/benchmarks.md, ingest): app ≥ 0.6 × baseline at peak; p99 < 50 ms open-loop at 70 % of the app's peak.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg  # type: ignore[import-untyped]
import httpx

from app.servers import free_port
from bench.common import (
    ServiceConfig,
    flush_redis,
    fresh_database,
    machine,
    migrate,
    pin_self,
    service_process,
    use_uvloop,
    uvicorn_process,
    verdict,
)
from bench.load import LoadResult, closed_loop, open_loop, post_request

FORM = "application/x-www-form-urlencoded"
ACCOUNT_ID = 31_000_001

# --- the baseline: a bare ASGI app that INSERTs the raw body with asyncpg --------------------------------

_pool: asyncpg.Pool | None = None


async def baseline_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """Read the body, INSERT it, answer a tiny JSON; nothing else (no framework, no parsing, no auth)."""
    global _pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _pool = await asyncpg.create_pool(os.environ["BENCH_BASELINE_DSN"], min_size=10, max_size=20)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _pool is not None:
                    await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    status, payload = 200, b'{"status":"ok"}'
    if scope["method"] == "POST":
        assert _pool is not None
        await _pool.execute("INSERT INTO bench_raw (body) VALUES ($1)", b"".join(chunks).decode())
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# --- request bodies -------------------------------------------------------------------------------------


def body_factory() -> Callable[[], bytes]:
    """A real one-contact ``contacts[update]`` body (≈ 0.8 kB) with a fresh ``updated_at`` per call."""
    from sandbox.kommo import KommoSandboxState, seed_contacts
    from sandbox.kommo.serialize import account_pairs, form_encode, webhook_contact_pairs

    state = KommoSandboxState()
    account = state.create_account("benchacme", account_id=ACCOUNT_ID)
    [cid] = seed_contacts(state, "benchacme", 1, seed=3)
    contact = account.contacts[cid]
    marker = "987654321987"
    contact.updated_at = int(marker)
    pairs = account_pairs(account, "kommo.com") + webhook_contact_pairs(account, "update", 0, contact)
    body = form_encode(pairs)
    head, tail = body.rsplit(marker.encode(), 1)  # updated_at is the last timestamp in the body
    counter = itertools.count(1_700_000_000)
    return lambda: head + str(next(counter)).encode() + tail


# --- runs -----------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc): the server's cost, whatever else runs."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Side:
    """One server under test: where to send, and what it cost."""

    port: int
    path: str
    pid: int
    runs: dict[int, list[LoadResult]] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)

    async def measure(self, make: Callable[[], bytes], c: int, seconds: float) -> None:
        port, path = self.port, self.path
        before = _cpu_seconds(self.pid)
        result = await closed_loop(
            "127.0.0.1", port, lambda: post_request("127.0.0.1", port, path, make(), FORM), c, seconds
        )
        self.cpu[c] = self.cpu.get(c, 0.0) + _cpu_seconds(self.pid) - before
        self.runs.setdefault(c, []).append(result)

    def merged(self, c: int) -> LoadResult:
        runs = self.runs[c]
        return LoadResult(
            requests=sum(r.requests for r in runs),
            errors=sum(r.errors for r in runs),
            seconds=sum(r.seconds for r in runs),
            latencies=[x for r in runs for x in r.latencies],
        )

    def cpu_us(self, c: int) -> float:
        return self.cpu[c] / max(1, self.merged(c).requests) * 1e6


async def _register(cfg: ServiceConfig) -> str:
    """Create the integration through the API; returns the webhook path with its token."""
    async with httpx.AsyncClient(base_url=cfg.public_url, timeout=10) as api:
        r = await api.post(
            "/integration",
            headers={"Authorization": f"Bearer {cfg.admin_token}"},
            json={
                "account_id": ACCOUNT_ID,
                "subdomain": "benchacme",
                "client_id": "00000000-0000-4000-8000-000000000001",
                "client_secret": "x" * 64,
                "redirect_uri": f"{cfg.public_url}/auth/callback",
            },
        )
        r.raise_for_status()
        url = urlsplit(r.json()["webhook_url"])
        return f"{url.path}?token={parse_qs(url.query)['token'][0]}"


async def run(seconds: float, levels: list[int], open_seconds: float, rounds: int) -> dict[str, Any]:
    """Both servers run at once (same core); each level alternates short runs of each, ``rounds`` times, so
    a noisy neighbour hurts both sides alike. Returns the figures."""
    pin_self(1)
    make = body_factory()
    results: dict[str, Any] = {"machine": machine(), "rounds": rounds}
    async with fresh_database() as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "CREATE TABLE bench_raw (id bigserial PRIMARY KEY, body text NOT NULL,"
            " received_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.close()
        await flush_redis()
        base_port, app_port = free_port(), free_port()
        cfg = ServiceConfig(dsn=dsn, public_url=f"http://127.0.0.1:{app_port}")
        await asyncio.to_thread(migrate, cfg)
        base_env = {**os.environ, "BENCH_BASELINE_DSN": dsn}
        async with (
            uvicorn_process("bench.ingest:baseline_app", base_port, base_env, cpu=0, probe="/") as base_proc,
            service_process(app_port, cfg.env(), cpu=0) as app_proc,
        ):
            path = await _register(cfg)
            async with httpx.AsyncClient(base_url=cfg.public_url, timeout=10) as api:
                check = await api.post(path, content=make(), headers={"content-type": FORM})
                assert check.status_code == 200, check.text
                assert check.json()["status"] == "accepted", check.text
            base = Side(base_port, "/ingest", base_proc.pid)
            app = Side(app_port, path, app_proc.pid)
            for side in (base, app):  # warm-up (connection pools, statement caches)
                await closed_loop(
                    "127.0.0.1",
                    side.port,
                    lambda side=side: post_request("127.0.0.1", side.port, side.path, make(), FORM),
                    8,
                    1.0,
                )
            for c in levels:
                for _ in range(rounds):
                    for side in (base, app):
                        await side.measure(make, c, seconds / rounds)
            base_peak = max(base.merged(c).rps for c in levels)
            app_peak = max(app.merged(c).rps for c in levels)
            opened = {}
            for name, side, peak in (("base", base, base_peak), ("app", app, app_peak)):
                port, spath = side.port, side.path
                opened[name] = await open_loop(
                    "127.0.0.1",
                    port,
                    lambda port=port, spath=spath: post_request("127.0.0.1", port, spath, make(), FORM),
                    0.7 * peak,
                    open_seconds,
                )
        conn = await asyncpg.connect(dsn)
        stored = await conn.fetchval("SELECT count(*) FROM webhook_event")
        await conn.close()
    results.update(
        base=base,
        app=app,
        levels=levels,
        base_open=opened["base"],
        app_open=opened["app"],
        stored=stored,
        base_peak=base_peak,
        app_peak=app_peak,
    )
    return results


def report(res: dict[str, Any]) -> None:
    base: Side = res["base"]
    app: Side = res["app"]
    print(f"# ingest — {res['machine']} ({res['rounds']} interleaved rounds per level)")
    print(
        f"{'c':>4} | {'baseline rps':>12} {'p50 ms':>7} {'p99 ms':>7} {'cpu µs/req':>10} | {'app rps':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'cpu µs/req':>10} {'errors':>6} | ratio  cpu ratio"
    )
    for c in res["levels"]:
        b, a = base.merged(c), app.merged(c)
        print(
            f"{c:>4} | {b.rps:12.0f} {b.p(50):7.1f} {b.p(99):7.1f} {base.cpu_us(c):10.0f} | {a.rps:8.0f} "
            f"{a.p(50):7.1f} {a.p(99):7.1f} {app.cpu_us(c):10.0f} {a.errors:6d} | {a.rps / b.rps:.2f}   "
            f"{base.cpu_us(c) / app.cpu_us(c):.2f}"
        )
    ratio = res["app_peak"] / res["base_peak"]
    print(
        f"peak: app {res['app_peak']:.0f} rps / baseline {res['base_peak']:.0f} rps = {ratio:.2f} "
        f"(target ≥ 0.60: {verdict(ratio >= 0.6)})"
    )
    for name, o in (("baseline", res["base_open"]), ("app", res["app_open"])):
        print(
            f"open loop {name}: {o.requests / o.seconds:.0f} rps offered≈70 % of peak, p50 {o.p(50):.1f} ms, "
            f"p99 {o.p(99):.1f} ms, p99.9 {o.p(99.9):.1f} ms, errors {o.errors}"
        )
    p99 = res["app_open"].p(99)
    print(
        f"app p99 at 70 % of peak: {p99:.1f} ms (target < 50 ms: {verdict(p99 < 50)}); "
        f"webhook_event rows stored: {res['stored']}"
    )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    p.add_argument("--levels", default="4,16,64")
    p.add_argument("--open-seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=3, help="interleaved baseline/app runs per level")
    args = p.parse_args(argv)
    use_uvloop()
    levels = [int(x) for x in args.levels.split(",")]
    res = asyncio.run(run(args.seconds, levels, args.open_seconds, args.rounds))
    report(res)


if __name__ == "__main__":
    main()
