"""The service processes' collector set-up: start-up objects frozen, young collections rarer, and cycles still
collected without anyone calling ``gc.collect``. Run in a child interpreter: the test process has set up
its own collector already (tests/conftest.py), so it cannot show the change."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from app.collector import OLDER_THRESHOLD, YOUNG_THRESHOLD

_CHILD = textwrap.dedent(
    """
    import gc, json, weakref
    import app.main  # a service's start-up imports
    from app.collector import tune_collector

    before = gc.get_freeze_count()
    tune_collector()

    class Node:
        pass

    freed = []
    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a  # reference counting alone never frees these
        weakref.finalize(a, freed.append, 1)

    for _ in range(50):
        cycle()
    held = len(freed)
    for _ in range(3):  # allocations alone, well past the young threshold
        junk = [[] for _ in range(30_000)]
        del junk
    print(json.dumps({
        "threshold": gc.get_threshold(),
        "frozen_before": before,
        "frozen": gc.get_freeze_count(),
        "freed_at_once": held,
        "freed_later": len(freed),
    }))
    """
)


def test_service_processes_freeze_start_up_and_still_collect_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["threshold"] == [YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD]
    assert seen["frozen_before"] == 0
    assert seen["frozen"] > 100_000  # the imported framework: out of every later collection's walk
    # Collections are rarer, not gone: the 50 cycles are freed once enough new objects were made.
    assert seen["freed_at_once"] == 0
    assert seen["freed_later"] == 50
