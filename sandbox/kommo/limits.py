"""Clock, call statistics, per-integration rate limit (with 403 escalation) and injected faults."""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from .config import KommoSandboxConfig


class Clock:
    """Wall clock plus an offset that the control API can advance (to expire codes and tokens).

    Only token/code lifetimes, timestamps in data and the webhook-disable window use it; the 1-s rate-limit
    window and delivery timeouts use real monotonic time.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> int:
        return int(time.time() + self.offset)

    def advance(self, seconds: float) -> int:
        self.offset += seconds
        return self.now()


@dataclass
class Stats:
    calls: Counter[str] = field(default_factory=Counter)  # "GET /api/v4/contacts" -> n (every call received)
    responses: Counter[str] = field(default_factory=Counter)  # "GET /api/v4/contacts 200" -> n
    by_account: dict[str, Counter[str]] = field(default_factory=dict)  # by subdomain
    by_host: dict[str, Counter[str]] = field(default_factory=dict)  # by the host the call was made on
    grants: Counter[str] = field(default_factory=Counter)  # successful token grants by grant_type
    token_errors: Counter[str] = field(default_factory=Counter)  # failed token requests by grant_type
    rate_limited: int = 0
    blocked: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    max_calls_in_1s: dict[str, int] = field(default_factory=dict)  # per client_id, accepted API calls

    def record(self, endpoint: str, status: int, subdomain: str | None, host: str | None = None) -> None:
        self.calls[endpoint] += 1
        self.responses[f"{endpoint} {status}"] += 1
        if subdomain is not None:
            self.by_account.setdefault(subdomain, Counter())[endpoint] += 1
        if host is not None:
            self.by_host.setdefault(host, Counter())[endpoint] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "responses": dict(self.responses),
            "by_account": {k: dict(v) for k, v in self.by_account.items()},
            "by_host": {k: dict(v) for k, v in self.by_host.items()},
            "grants": dict(self.grants),
            "token_errors": dict(self.token_errors),
            "refresh_count": self.grants.get("refresh_token", 0),
            "rate_limited": self.rate_limited,
            "blocked": self.blocked,
            "faults": dict(self.faults),
            "max_calls_in_1s": dict(self.max_calls_in_1s),
            "total_calls": sum(self.calls.values()),
        }


class RateLimiter:
    """Sliding 1-s window per integration; only accepted calls enter the window."""

    def __init__(self) -> None:
        self.windows: dict[str, deque[float]] = {}
        self.consecutive_429: Counter[str] = Counter()
        self.blocked_until: dict[str, float] = {}

    def check(self, client_id: str, cfg: KommoSandboxConfig, stats: Stats) -> int:
        """200 to proceed, 429 when over the limit, 403 while blocked."""
        t = time.monotonic()
        until = self.blocked_until.get(client_id)
        if until is not None:
            if t < until:
                return 403
            del self.blocked_until[client_id]
            self.consecutive_429[client_id] = 0
        window = self.windows.setdefault(client_id, deque())
        while window and window[0] <= t - 1.0:
            window.popleft()
        if cfg.rate_limit_rps is not None and len(window) >= cfg.rate_limit_rps:
            self.consecutive_429[client_id] += 1
            if cfg.block_after_429s is not None and self.consecutive_429[client_id] >= cfg.block_after_429s:
                self.blocked_until[client_id] = t + cfg.block_seconds
            return 429
        self.consecutive_429[client_id] = 0
        window.append(t)
        if len(window) > stats.max_calls_in_1s.get(client_id, 0):
            stats.max_calls_in_1s[client_id] = len(window)
        return 200

    def reset(self) -> None:
        self.windows.clear()
        self.consecutive_429.clear()
        self.blocked_until.clear()


@dataclass
class Faults:
    """Injected faults, applied to API calls and the token endpoint, deterministic for a given seed."""

    latency_ms: int = 0
    latency_jitter_ms: int = 0
    error_rate: float = 0.0
    error_status: int = 500
    burst_429: int = 0  # the next N calls answer 429
    lost_answers: int = 0  # the next N writes (POST/PATCH) are applied, then answered 504
    seed: int = 0
    # Only calls of this endpoint ("POST /api/v4/contacts/notes") get the faults; None: every call. A test
    # aiming at one call is then not hit by another call that happens to come first (a cron's read).
    only: str | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def applies(self, endpoint: str | None) -> bool:
        return self.only is None or endpoint == self.only

    def configure(self, body: dict[str, Any]) -> None:
        for key in ("latency_ms", "latency_jitter_ms", "burst_429", "lost_answers", "seed", "error_status"):
            if key in body:
                v = body[key]
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ValueError(f"{key} must be a non-negative integer")
                setattr(self, key, v)
        if "only" in body:
            v = body["only"]
            if v is not None and not (isinstance(v, str) and v.strip()):
                raise ValueError("only must be an endpoint such as 'POST /api/v4/contacts/notes', or null")
            self.only = v
        if "error_rate" in body:
            v = body["error_rate"]
            if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= 1:
                raise ValueError("error_rate must be a number in [0, 1]")
            self.error_rate = float(v)
        if not 500 <= self.error_status <= 599:
            raise ValueError("error_status must be a 5xx code")
        if "seed" in body or "error_rate" in body or "latency_jitter_ms" in body:
            self.rng = random.Random(self.seed)

    def delay(self) -> float:
        if not self.latency_ms and not self.latency_jitter_ms:
            return 0.0
        jitter = self.rng.randint(0, self.latency_jitter_ms) if self.latency_jitter_ms else 0
        return (self.latency_ms + jitter) / 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "latency_jitter_ms": self.latency_jitter_ms,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "burst_429": self.burst_429,
            "lost_answers": self.lost_answers,
            "seed": self.seed,
            "only": self.only,
        }
