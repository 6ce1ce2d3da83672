"""Attempt caps for calls that unauthenticated requests can trigger (OAuth code exchanges).

Unlike the rate limiters in ``app.connectors.ratelimit``, which make a caller wait for budget, this one refuses
at once: the caller is a browser or Kommo's one-shot widget redirect, and waiting would only hold a request
(and a database connection) open for whoever sends the most requests.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

MAX_KEYS = 10_000


class AttemptWindow:
    """Sliding-window attempt counts per key, kept in this process."""

    def __init__(self, *, max_keys: int = MAX_KEYS) -> None:
        self._max_keys = max_keys
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()

    def try_acquire(self, limits: dict[str, int], *, window: float) -> float | None:
        """Count one attempt under every key of ``limits`` if each has room (key → max attempts per
        ``window`` seconds), and return None; otherwise count nothing and return the seconds until a key
        that is full has room again."""
        now = time.monotonic()
        wait = 0.0
        for key, limit in limits.items():
            log = self._log(key, now, window)
            if len(log) >= max(limit, 0):
                wait = max(wait, (log[0] + window - now) if log else window)
        if wait > 0:
            return wait
        for key in limits:
            self._attempts[key].append(now)
        return None

    def _log(self, key: str, now: float, window: float) -> deque[float]:
        log = self._attempts.get(key)
        if log is None:
            log = self._attempts[key] = deque()
            while len(self._attempts) > self._max_keys:
                self._attempts.popitem(last=False)
        self._attempts.move_to_end(key)
        while log and log[0] <= now - window:
            log.popleft()
        return log
