"""Process-wide resources, built once at start-up (API lifespan or worker on_startup) and closed at exit."""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field

import httpx
import redis.asyncio as aioredis
from arq.connections import ArqRedis

from app.accounts.throttle import AttemptWindow
from app.config import Settings
from app.connectors.ratelimit import RateLimiter, RoundTripWindow
from app.connectors.shared_budget import SharedWindow, shared_window
from app.db.session import Database, DbTimeouts, create_engine
from app.queue import create_queue
from app.security.crypto import Cipher, configure_encryption

USER_AGENT = "contactsync/0.1 (+https://github.com/contactsync/contactsync)"

# Idle pooled connections are dropped after this long. It must stay below the keep-alive timeout of the servers
# we call: a connection taken from the pool just as the server closes it fails with a ReadError (a request
# that may never have left, and a call lost for the job). 5 s is common (Apache, uvicorn, the sandboxes),
# and was httpx's own expiry here, so the two met head on.
KEEPALIVE_EXPIRY_SECONDS = 4.0


def kommo_budget(calls_per_second: int) -> RateLimiter:
    """The budget of one Kommo integration. Kommo counts arrivals in its own sliding second, and one 429
    costs its 300 s pause. The full rate, each call sent a second after the call ``calls_per_second`` before
    it returned: safe whatever the network or a busy event loop delays (a fixed 50 ms guard was not,
    measured under CPU load), while a 20 % wider window would leave a fifth of the budget, and of full-sync
    speed, unused."""
    return RoundTripWindow(max(1, calls_per_second), 1.0)


def unisender_budget(calls: int, window: float = 60.0) -> RateLimiter:
    """The budget of one Unisender key: at most ``calls`` in any ``window`` seconds (1,200 a minute) as
    Unisender counts them, by the same round-trip rule as Kommo's. A window over our grant times with a 5 %
    margin held at 60 s but not at a 1-s window in the contract test: arrival jitter beyond the margin let
    calls of two windows arrive within one."""
    return RoundTripWindow(max(1, calls), window)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one verifying TLS context (httpx's default: certifi's CA bundle). Loading the bundle costs
    50-100 ms of CPU, and every ``httpx.AsyncClient`` built without a context loads its own."""
    return httpx.create_ssl_context()


def build_http_client(
    *, timeout: float, connect: float = 5.0, max_connections: int = 50
) -> httpx.AsyncClient:
    """One client per upstream: connection pooling, explicit timeouts; status retries are the worker's job."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        ),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
        verify=tls_context(),
    )


def loopback_client(
    base_url: str, *, timeout: float = 30.0, limits: httpx.Limits | None = None
) -> httpx.AsyncClient:
    """A client for one of our own servers or a sandbox on this machine (the demo, the tests). Idle connections
    are dropped before the servers' 5-s keep-alive closes them, as for the upstreams."""
    return httpx.AsyncClient(
        verify=tls_context(),
        base_url=base_url,
        timeout=timeout,
        limits=limits or httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS),
    )


@dataclass(kw_only=True)
class ProcessContext:
    settings: Settings
    db: Database
    queue: ArqRedis
    cipher: Cipher
    kommo_http: httpx.AsyncClient
    unisender_http: httpx.AsyncClient
    # The shared budgets' own client: the worker replaces ``queue`` when Redis comes back, and a budget must not
    # hold a closed one. None = budgets per process (``shared_budgets`` off).
    budget_redis: aioredis.Redis | None = None
    # Per-credential client-side budgets (keyed by Kommo client_id / Unisender key hash) so every job of this
    # process shares one bucket per upstream credential.
    limiters: dict[str, RateLimiter] = field(default_factory=dict)
    # Attempts that unauthenticated requests can trigger (OAuth code exchanges), capped per key.
    attempts: AttemptWindow = field(default_factory=AttemptWindow)

    def kommo_limiter(self, client_id: str) -> RateLimiter:
        key = f"kommo:{client_id}"
        if key not in self.limiters:
            rate = max(1, int(self.settings.kommo_rate_per_second))
            self.limiters[key] = (
                kommo_budget(rate)
                if self.budget_redis is None
                else shared_window(
                    self.budget_redis,
                    key,
                    limit=rate,
                    window=1.0,
                    fallback_share=self.settings.budget_fallback_share,
                )
            )
        return self.limiters[key]

    def unisender_limiter(self, key_id: str) -> RateLimiter:
        key = f"unisender:{key_id}"
        if key not in self.limiters:
            calls = max(1, int(self.settings.unisender_calls_per_minute))
            self.limiters[key] = (
                unisender_budget(calls)
                if self.budget_redis is None
                else shared_window(
                    self.budget_redis,
                    key,
                    limit=calls,
                    window=60.0,
                    fallback_share=self.settings.budget_fallback_share,
                )
            )
        return self.limiters[key]

    async def close(self) -> None:
        await self.kommo_http.aclose()
        await self.unisender_http.aclose()
        await self.queue.aclose()
        if self.budget_redis is not None:
            # A provider's pause still being written must reach the other processes before the client goes.
            for limiter in self.limiters.values():
                if isinstance(limiter, SharedWindow):
                    await limiter.close()
            await self.budget_redis.aclose()
        await self.db.dispose()


async def build_context(settings: Settings, *, pre_ping: bool = True) -> ProcessContext:
    """``pre_ping=False`` for the API: its hot path retries a dead connection itself (``run_autocommit``)."""
    cipher = configure_encryption(settings.encryption_keys())
    engine = create_engine(
        settings.require_database_url(),
        pool_size=settings.db_pool_size,
        pre_ping=pre_ping,
        timeouts=DbTimeouts(
            connect=settings.db_connect_timeout,
            statement=settings.db_statement_timeout,
            pool=settings.db_pool_timeout,
        ),
    )
    redis_url = settings.require_redis_url()
    return ProcessContext(
        settings=settings,
        db=Database(engine),
        queue=await create_queue(redis_url),
        # Short timeouts: a budget that waits on a silent Redis stalls every call; its fallback takes over.
        budget_redis=aioredis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
        if settings.shared_budgets
        else None,
        cipher=cipher,
        # Kommo's official library uses 5 s connect / 20 s total; Unisender's import may take up to 30 s.
        kommo_http=build_http_client(timeout=20.0),
        unisender_http=build_http_client(timeout=35.0),
    )
