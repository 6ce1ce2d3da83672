"""Summarise a py-spy ``raw`` (folded) profile: top frames by self and inclusive time, idle threads excluded.

.venv/bin/python -m bench.folded /tmp/worker.raw [--top 30] [--match app/]
"""

from __future__ import annotations

import argparse
from collections import Counter

IDLE = ("Condition.wait", "select (selectors", "_run_once", "Queue.get", "poll (selectors", "run_forever")


def summarise(path: str, top: int, match: str) -> None:
    """Print self and inclusive shares of the busy samples."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    busy = total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, n_s = line.rstrip().rpartition(" ")
            n = int(n_s)
            total += n
            frames = stack.split(";")
            if any(frames[-1].startswith(i) for i in IDLE):
                continue
            busy += n
            self_c[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
    print(f"samples {total}, busy (not idle-waiting) {busy} = {busy / max(total, 1):.0%}")
    print("--- self time, share of busy samples")
    for k, v in self_c.most_common(top):
        print(f"{v / busy:6.1%}  {k[:160]}")
    print(f"--- inclusive, frames containing {match!r}")
    shown = 0
    for k, v in incl.most_common():
        if match in k:
            print(f"{v / busy:6.1%}  {k[:160]}")
            shown += 1
            if shown >= top:
                break


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default="app/")
    args = p.parse_args(argv)
    summarise(args.path, args.top, args.match)


if __name__ == "__main__":
    main()
