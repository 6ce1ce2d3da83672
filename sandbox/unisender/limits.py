"""Rate limiting (sliding window) and deterministic fault injection for the Unisender sandbox."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field

FAULT_KINDS = frozenset(
    {"retry_later", "http_500", "http_502", "http_503", "rate_limit", "rate_limit_ip", "hang"}
)


class SlidingWindow:
    """Counts events per key over the last ``window`` seconds; each key keeps at most ``limit`` timestamps."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def clear(self) -> None:
        """Forget all keys."""
        self._hits.clear()

    def allow(self, key: str, limit: int, now: float | None = None) -> bool:
        """Record a hit for ``key`` and return True, or return False (nothing recorded) if over ``limit``."""
        moment = time.monotonic() if now is None else now
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        cutoff = moment - self.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= limit:
            return False
        hits.append(moment)
        return True


@dataclass
class FaultPlan:
    """Which calls fail and how: a seeded RNG decides per matching call, so a run is reproducible."""

    rate: float
    kinds: list[str]
    seed: int = 0
    method: str | None = None
    api_key: str | None = None
    remaining: int | None = None  # stop after this many injected faults
    hang_seconds: float = 35.0
    hang_applies: bool = True
    injected: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self, method: str, api_key: str | None) -> str | None:
        """The fault kind for this call, or None to answer normally."""
        if self.method is not None and self.method != method:
            return None
        if self.api_key is not None and self.api_key != api_key:
            return None
        if self.remaining is not None and self.remaining <= 0:
            return None
        if self.rng.random() >= self.rate:
            return None
        kind = self.kinds[self.rng.randrange(len(self.kinds))]
        if self.remaining is not None:
            self.remaining -= 1
        self.injected[kind] = self.injected.get(kind, 0) + 1
        return kind

    def as_json(self) -> dict[str, object]:
        """Control-API view."""
        return {
            "rate": self.rate,
            "kinds": self.kinds,
            "seed": self.seed,
            "method": self.method,
            "api_key": self.api_key,
            "remaining": self.remaining,
            "hang_seconds": self.hang_seconds,
            "hang_applies": self.hang_applies,
            "injected": dict(self.injected),
        }
