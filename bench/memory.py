"""Worker peak RSS during a full sync, by size: the worker is its own ``contactsync worker`` process and its
``VmHWM`` (peak resident set) is read from /proc after the sync. Each size gets a fresh stack and worker.
Limits are scaled ×10 by default so the large sizes stay short (memory does not depend on the pace).

    .venv/bin/python -m bench.memory [--sizes 10000,100000] [--million] [--scale 10]

Target: peak(1M) ≤ 1.2 × peak(10k); the 100k/10k ratio is the quick proxy.
"""

from __future__ import annotations

import argparse
import asyncio

from bench.common import machine, use_uvloop, verdict
from bench.fullsync import run_sync


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--million", action="store_true", help="also 1,000,000 contacts")
    p.add_argument("--scale", type=float, default=10.0)
    args = p.parse_args(argv)
    use_uvloop()
    sizes = [int(x) for x in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    rows = [asyncio.run(run_sync(n, args.scale, within=3600)) for n in sizes]
    print(f"# worker memory — {machine()}")
    print(f"{'contacts':>9} | {'RSS idle MB':>11} {'VmHWM MB':>9} | {'wall s':>7} {'status':>6}")
    for r in rows:
        print(
            f"{r['contacts']:>9} | {r['worker_rss_before_kb'] / 1024:11.1f} {r['worker_hwm_kb'] / 1024:9.1f} | "
            f"{r['wall']:7.1f} {r['status']:>6}"
        )
    base = rows[0]["worker_hwm_kb"]
    for r in rows[1:]:
        ratio = r["worker_hwm_kb"] / base
        print(
            f"VmHWM {r['contacts']}/{rows[0]['contacts']} = {ratio:.2f} (target ≤ 1.20: {verdict(ratio <= 1.2)})"
        )


if __name__ == "__main__":
    main()
