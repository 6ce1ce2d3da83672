"""Webhook ingest throughput and latency: the real app against a bare asyncpg INSERT baseline, same server.

Both run as one uvicorn process (httptools + uvloop, no access log) pinned to core 0; this load generator runs
on core 1 (PostgreSQL floats). Bodies are real one-contact Kommo ``contacts[update]`` forms produced by the
Kommo sandbox's serializer, each with a unique ``updated_at`` so delivery dedupe never short-circuits.

    .venv/bin/python -m bench.ingest [--seconds 5] [--levels 4,16,64]

Targets (PERFORMANCE.md T1): app ≥ 0.6 × baseline at peak; p99 < 50 ms open-loop at 70 % of the app's peak.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg  # type: ignore[import-untyped]
import httpx

from app.serving import free_port
from bench.common import (
    LoadResult,
    ServiceConfig,
    closed_loop,
    flush_redis,
    fresh_database,
    machine,
    migrate,
    open_loop,
    pin_self,
    post_request,
    use_uvloop,
    uvicorn_process,
    verdict,
)

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
    from app.sandbox.kommo import KommoSandboxState, seed_contacts
    from app.sandbox.kommo.serialize import account_pairs, form_encode, webhook_contact_pairs

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


async def _levels(
    port: int, path: str, make: Callable[[], bytes], levels: list[int], seconds: float
) -> dict[int, LoadResult]:
    def req() -> bytes:
        return post_request("127.0.0.1", port, path, make(), FORM)

    await closed_loop("127.0.0.1", port, req, 8, 1.0)  # warm-up
    out: dict[int, LoadResult] = {}
    for c in levels:
        out[c] = await closed_loop("127.0.0.1", port, req, c, seconds)
    return out


async def run(seconds: float, levels: list[int], open_seconds: float) -> dict[str, Any]:
    """Measure baseline and app one after the other on the same server setup; returns the figures."""
    pin_self(1)
    make = body_factory()
    results: dict[str, Any] = {"machine": machine()}
    async with fresh_database() as dsn:
        # Baseline first: its table lives in the same fresh database.
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "CREATE TABLE bench_raw (id bigserial PRIMARY KEY, body text NOT NULL,"
            " received_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.close()
        port = free_port()
        env = {**os.environ, "BENCH_BASELINE_DSN": dsn}
        async with uvicorn_process("bench.ingest:baseline_app", port, env, cpu=0, probe="/"):
            base = await _levels(port, "/ingest", make, levels, seconds)
            base_peak = max(r.rps for r in base.values())
            base_open = await open_loop(
                "127.0.0.1",
                port,
                lambda: post_request("127.0.0.1", port, "/ingest", make(), FORM),
                0.7 * base_peak,
                open_seconds,
            )
        await flush_redis()
        port = free_port()
        cfg = ServiceConfig(dsn=dsn, public_url=f"http://127.0.0.1:{port}")
        await asyncio.to_thread(migrate, cfg)
        async with uvicorn_process("app.main:create_app", port, cfg.env(), factory=True, cpu=0):
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
                path = f"{url.path}?token={parse_qs(url.query)['token'][0]}"
                check = await api.post(path, content=make(), headers={"content-type": FORM})
                assert check.status_code == 200, check.text
                assert check.json()["status"] == "accepted", check.text
            app = await _levels(port, path, make, levels, seconds)
            app_peak = max(r.rps for r in app.values())
            app_open = await open_loop(
                "127.0.0.1",
                port,
                lambda: post_request("127.0.0.1", port, path, make(), FORM),
                0.7 * app_peak,
                open_seconds,
            )
        conn = await asyncpg.connect(dsn)
        stored = await conn.fetchval("SELECT count(*) FROM webhook_event")
        await conn.close()
    results.update(
        base=base,
        app=app,
        base_open=base_open,
        app_open=app_open,
        stored=stored,
        base_peak=base_peak,
        app_peak=app_peak,
    )
    return results


def report(res: dict[str, Any]) -> None:
    print(f"# ingest — {res['machine']}")
    print(
        f"{'c':>4} | {'baseline rps':>12} {'p50 ms':>7} {'p99 ms':>7} | {'app rps':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6} | ratio"
    )
    for c, b in res["base"].items():
        a = res["app"][c]
        print(
            f"{c:>4} | {b.rps:12.0f} {b.p(50):7.1f} {b.p(99):7.1f} | {a.rps:8.0f} {a.p(50):7.1f} "
            f"{a.p(99):7.1f} {a.errors:6d} | {a.rps / b.rps:.2f}"
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
    args = p.parse_args(argv)
    use_uvloop()
    res = asyncio.run(run(args.seconds, [int(x) for x in args.levels.split(",")], args.open_seconds))
    report(res)


if __name__ == "__main__":
    main()
