"""Webhook authentication with a short-lived in-process cache of token hashes.

Kommo signs nothing: a webhook is authenticated by the unguessable token in its URL, compared in constant
time with the stored hash. Reading that hash on every delivery would cost a database round trip per webhook,
so each process keeps it for ``ttl`` seconds. A rotated token (``contactsync rotate-token``, ``POST
/integration/{id}/rotate-token``) is therefore refused at once by the process that rotated it (it calls
``forget``) and by every other process within ``ttl`` seconds (5). Unknown accounts are cached too, for a
second, so a flood of requests for random accounts cannot turn into a flood of queries, while an account
created a moment ago (its webhooks start right after the OAuth callback) is not refused for long.

The same read brings the account's subdomain and host, so a Kommo body whose account block names another
account is refused without another query (``WebhookIdentity.check_account``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from app.accounts import repository as repo
from app.connectors.base import CrmWebhookBatch
from app.connectors.kommo.hosts import host_of_link, split_host
from app.db.session import Database
from app.errors import BadRequest, Unauthorized
from app.security.tokens import token_matches

DEFAULT_TTL_SECONDS = 5.0
UNKNOWN_TTL_SECONDS = 1.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class WebhookIdentity:
    """Who the verified webhook URL belongs to."""

    subdomain: str
    host: str | None  # None until the account is connected

    def check_account(self, batch: CrmWebhookBatch) -> None:
        """Refuse (400 ``account_mismatch``) a body whose ``account[subdomain]`` or ``account[_links][self]``
        names another account. Absent fields are not checked (old deliveries carried only the subdomain).
        ``acme.amocrm.com`` matches ``acme.kommo.com``: the same Kommo account under its former domain."""
        if batch.subdomain is not None and batch.subdomain.strip().lower() != self.subdomain.lower():
            raise _mismatch("account[subdomain]")
        if batch.account_link is not None:
            sent = host_of_link(batch.account_link)
            stored = split_host(self.host) if self.host else None
            if (
                sent is None
                or sent.subdomain != self.subdomain.lower()
                or (stored is not None and not stored.same_account(sent))
            ):
                raise _mismatch("account[_links][self]")


def _mismatch(field: str) -> BadRequest:
    return BadRequest(f"{field} in the body does not match the URL's account", code="account_mismatch")


class WebhookAuth:
    def __init__(self, *, ttl: float = DEFAULT_TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._unknown_ttl = min(ttl, UNKNOWN_TTL_SECONDS)
        self._max_entries = max_entries
        # account id → (token hash, identity) or None for an unknown account, and the monotonic expiry
        self._hashes: OrderedDict[int, tuple[tuple[str, WebhookIdentity] | None, float]] = OrderedDict()

    async def verify(self, db: Database, account_id: int, token: str | None) -> WebhookIdentity:
        """The account's identity if ``token`` is its webhook token; raise 401 ``invalid_token`` otherwise.

        An unknown account gets the same answer as a wrong token, after the same constant-time comparison.
        """
        entry = await self._entry(db, account_id)
        if not token_matches(token, entry[0] if entry is not None else None) or entry is None:
            raise Unauthorized("Missing or invalid webhook token.", code="invalid_token")
        return entry[1]

    def forget(self, account_id: int) -> None:
        """Drop the cached hash (the token was rotated or the integration removed in this process)."""
        self._hashes.pop(account_id, None)

    async def _entry(self, db: Database, account_id: int) -> tuple[str, WebhookIdentity] | None:
        now = time.monotonic()
        cached = self._hashes.get(account_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await db.run_autocommit(lambda conn: repo.webhook_identity(conn, account_id))
        entry = None if row is None else (row.token_hash, WebhookIdentity(row.subdomain, row.host))
        self._hashes[account_id] = (entry, now + (self._ttl if entry is not None else self._unknown_ttl))
        self._hashes.move_to_end(account_id)
        while len(self._hashes) > self._max_entries:
            self._hashes.popitem(last=False)
        return entry
