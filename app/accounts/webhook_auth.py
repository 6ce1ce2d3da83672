"""Webhook authentication with a short-lived in-process cache of token hashes.

Kommo signs nothing: a webhook is authenticated by the unguessable token in its URL, compared in constant
time with the stored hash. Reading that hash on every delivery would cost a database round trip per webhook,
so each process keeps it for ``ttl`` seconds. A rotated token therefore keeps working in other processes for
at most ``ttl`` seconds (the rotating process forgets it at once). Unknown accounts are cached too, for a
second, so a flood of requests for random accounts cannot turn into a flood of queries, while an account
created a moment ago (its webhooks start right after the OAuth callback) is not refused for long.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from app.db.session import Database
from app.errors import Unauthorized
from app.security.tokens import token_matches
from app.sync import inbox

DEFAULT_TTL_SECONDS = 5.0
UNKNOWN_TTL_SECONDS = 1.0
MAX_ENTRIES = 10_000


class WebhookAuth:
    def __init__(self, *, ttl: float = DEFAULT_TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._unknown_ttl = min(ttl, UNKNOWN_TTL_SECONDS)
        self._max_entries = max_entries
        # account id → (token hash or None for an unknown account, monotonic expiry)
        self._hashes: OrderedDict[int, tuple[str | None, float]] = OrderedDict()

    async def verify(self, db: Database, account_id: int, token: str | None) -> None:
        """Return if ``token`` is the account's webhook token; raise 401 ``invalid_token`` otherwise.

        An unknown account gets the same answer as a wrong token, after the same constant-time comparison.
        """
        stored = await self._stored_hash(db, account_id)
        if not token_matches(token, stored):
            raise Unauthorized("Missing or invalid webhook token.", code="invalid_token")

    def forget(self, account_id: int) -> None:
        """Drop the cached hash (the token was rotated or the integration removed in this process)."""
        self._hashes.pop(account_id, None)

    async def _stored_hash(self, db: Database, account_id: int) -> str | None:
        now = time.monotonic()
        cached = self._hashes.get(account_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        stored = await db.run_autocommit(lambda conn: inbox.webhook_token_hash(conn, account_id))
        self._hashes[account_id] = (stored, now + (self._ttl if stored is not None else self._unknown_ttl))
        self._hashes.move_to_end(account_id)
        while len(self._hashes) > self._max_entries:
            self._hashes.popitem(last=False)
        return stored
