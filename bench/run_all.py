"""Quick versions of every benchmark, one after another (≈ 2.5 minutes in all on a 2-core machine).

.venv/bin/python -m bench.run_all
"""

from __future__ import annotations

import subprocess
import sys
import time

QUICK = [
    ["bench.ingest", "--seconds", "5", "--open-seconds", "8"],
    ["bench.lag", "--seconds", "10"],
    ["bench.fullsync", "--contacts", "10000", "--scales", "1,10"],
    # 100k takes ~10 min until the per-page cost is fixed (docs/benchmarks.md §3): quick = 30k.
    ["bench.memory", "--sizes", "10000,30000"],
    # 10k contacts: a smoke run of the spec change (floor ≈ 1 s, too small for the ratio to mean much; the
    # figures in docs/benchmarks.md §6 come from 50k). The sync's and both phases' calls fit one Unisender
    # window, so no settling pause.
    ["bench.remap", "--contacts", "10000", "--settle", "0"],
    # ~1,000 dead letters replayed (§7); the sync's and the replay's 6 calls fit one Unisender window.
    ["bench.replay", "--settle", "0"],
]


def main() -> int:
    """Run each quick benchmark as its own process; non-zero exit if any crashed."""
    failed = 0
    for args in QUICK:
        started = time.monotonic()
        print(f"\n$ python -m {' '.join(args)}", flush=True)
        rc = subprocess.call([sys.executable, "-m", *args], timeout=900)
        print(f"[{args[0]}: exit {rc}, {time.monotonic() - started:.0f} s]", flush=True)
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
