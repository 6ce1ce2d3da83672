"""The mapped account the benchmarks share: the 10-field / 3-list sync spec (``tests.support.mapping``, shared
with the mapping engine's end-to-end test), tags spread over seeded contacts, and a ledger that time-stamps
the moment Unisender takes an awaited row.

Tags are set through the Kommo sandbox's state without webhooks before the first full sync: the seed gives
no contact a tag, and a list rule over tags nobody has would push nothing to that list.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from tests.support.mapping import field_ids, mapped_spec

__all__ = ["TAG_SHARES", "field_ids", "mapped_spec"]

# Independent draws per contact; the segments of spec A are "vip" (VIP list) and "lead" or "customer" (Warm).
TAG_SHARES: dict[str, float] = {"vip": 0.2, "lead": 0.3, "customer": 0.2}


def spread_tags(kstate: Any, kacc: Any, shares: Mapping[str, float], seed: int) -> dict[str, int]:
    """Give each live contact each tag with its share (deterministic for ``seed``), without webhooks;
    returns how many contacts got each tag."""
    rng = random.Random(f"bench-tags:{seed}")
    counts = dict.fromkeys(shares, 0)
    batch: list[dict[str, Any]] = []
    for c in list(kacc.iter_live()):
        tags = [t for t, share in shares.items() if rng.random() < share]
        if not tags:
            continue
        for t in tags:
            counts[t] += 1
        batch.append({"id": c.id, "tags_to_add": [{"name": t} for t in tags]})
        if len(batch) == 1000:
            _apply(kstate, kacc, batch)
            batch = []
    if batch:
        _apply(kstate, kacc, batch)
    return counts


def _apply(kstate: Any, kacc: Any, items: list[dict[str, Any]]) -> None:
    _, _, errors = kstate.update_contacts(kacc, items, fire_webhooks=False)
    assert not errors, errors


async def put_spec(st: Any, account_id: int, spec: dict[str, Any]) -> dict[str, Any]:
    r = await st.api.put(f"/integration/{account_id}/mapping", headers=st.admin_headers, json=spec)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def map_account(
    st: Any, account: Any, *, seed: int, shares: Mapping[str, float] = TAG_SHARES
) -> dict[str, Any]:
    """Tag the seeded contacts, store spec A and wait until its (empty) remap run is done; returns the
    stored spec. The account must have been seeded with ``custom_fields``."""
    from tests.support.e2e import wait_quiet

    kstate = st.kommo_app.state.kommo
    kacc = kstate.accounts[account.subdomain]
    spread_tags(kstate, kacc, shares, seed)
    saved = await put_spec(st, account.account_id, mapped_spec(account.list_id, field_ids(kacc)))
    await wait_quiet(st, account, within=60)
    return saved


def list_ids(saved: Mapping[str, Any]) -> dict[str, int]:
    """Segment tag (or "all", "warm") → list id, from a stored spec."""
    out: dict[str, int] = {}
    for rule in saved["lists"]:
        key = "all" if rule["all"] else rule["tag"] or "warm"
        out[key] = rule["list_id"]
    return out


def sole_holders(kacc: Any) -> list[tuple[int, str]]:
    """(contact id, its first address) of the live contacts that alone hold every address they have, so an
    edit of theirs must show on Unisender under that address."""
    from app.sync.mapping import contact_emails

    email_field = kacc.field_by_code("EMAIL").id

    def emails(c: Any) -> list[str]:
        return contact_emails([v for fid, vals in c.fields if fid == email_field for v, _ in vals])

    holders: dict[str, int] = {}
    for c in kacc.iter_live():
        for e in emails(c):
            holders[e] = -1 if e in holders else c.id
    out: list[tuple[int, str]] = []
    for c in kacc.iter_live():
        mine = emails(c)
        if mine and all(holders[e] == c.id for e in mine):
            out.append((c.id, mine[0]))
    return out


Check = Callable[[Mapping[str, Any]], bool]


def named(name: str) -> Check:
    """A row that carries ``name`` as ``Name``."""
    return lambda data: data.get("Name") == name


def in_column(data: Mapping[str, Any], column: str, list_id: int) -> bool:
    """Whether an import row's list column (comma-separated ids) names ``list_id``."""
    return str(list_id) in str(data.get(column) or "").split(",")


class WatchedLedger(list):  # type: ignore[type-arg]
    """The Unisender account's ledger, noting when an awaited row is accepted: ``waiting`` maps an address
    to (when the change was made, a test of the row's data); a later change of the same address replaces the
    earlier wait (the earlier one is then superseded, not lost)."""

    def __init__(self, waiting: dict[str, tuple[float, Check]]) -> None:
        super().__init__()
        self.waiting = waiting
        self.seen: list[float] = []

    def append(self, entry: Any) -> None:
        super().append(entry)
        email = entry.get("email") or ""
        wait = self.waiting.get(email)
        if wait is not None and wait[1](entry.get("data") or {}):
            del self.waiting[email]
            self.seen.append(time.monotonic() - wait[0])


def watch_ledger(st: Any, api_key: str) -> WatchedLedger:
    """Swap the account's ledger for a watched one (same entries so far)."""
    uacc = st.unisender_app.state.unisender.accounts[api_key]
    ledger = WatchedLedger({})
    ledger.extend(uacc.ledger)
    uacc.ledger = ledger
    return ledger


async def drain_waits(waiting: Mapping[str, Any], within: float) -> None:
    """Until every awaited row was seen, or ``within`` seconds."""
    deadline = time.monotonic() + within
    while waiting and time.monotonic() < deadline:  # noqa: ASYNC110 (bounded poll of sandbox state)
        await asyncio.sleep(0.05)
