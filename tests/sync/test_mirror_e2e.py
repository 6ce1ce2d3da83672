"""The product end to end over real HTTP: service + worker + both sandboxes + PostgreSQL + Redis.

600 seeded contacts (three Kommo pages) are fully synced; 200 random edits of every kind go through the Kommo sandbox; then
Unisender must hold exactly what Kommo implies; unsubscribes made in Unisender reach Kommo and survive edits.
"""

from __future__ import annotations

import random

import pytest

from tests.conftest import Stack, running_worker
from tests.support.e2e import (
    Account,
    assert_mirror_exact,
    connect_account,
    kommo_contacts,
    unisender_contacts,
    wait_for,
    wait_quiet,
)

pytestmark = pytest.mark.slow


def _email_values(emails: list[str]) -> list[dict[str, object]]:
    return [{"field_code": "EMAIL", "values": [{"value": e, "enum_code": "WORK"} for e in emails]}]


async def random_edits(stack: Stack, account: Account, n: int, rng: random.Random) -> dict[str, int]:
    """Edits of every kind through the sandbox (they fire Kommo's real webhooks)."""
    base = f"/_sandbox/accounts/{account.subdomain}/contacts"
    kinds = {
        "rename": 0,
        "add_email": 0,
        "remove_email": 0,
        "delete": 0,
        "restore": 0,
        "duplicate": 0,
        "create": 0,
    }
    deleted: list[int] = []
    for i in range(n):
        live = await kommo_contacts(stack, account)
        ids = sorted(live)
        kind = rng.choice(list(kinds))
        if kind == "restore" and not deleted:
            kind = "rename"
        cid = rng.choice(ids)
        emails = list(live[cid]["emails"])  # type: ignore[arg-type]
        if kind == "rename":
            r = await stack.kommo.patch(
                base, json=[{"id": cid, "name": f"Renamed {i} {rng.randint(0, 999)}"}]
            )
        elif kind == "add_email":
            emails.append(f"new{i}.{cid}@example.org")
            r = await stack.kommo.patch(
                base, json=[{"id": cid, "custom_fields_values": _email_values(emails)}]
            )
        elif kind == "remove_email":
            if emails:
                emails.pop(rng.randrange(len(emails)))
            r = await stack.kommo.patch(
                base, json=[{"id": cid, "custom_fields_values": _email_values(emails)}]
            )
        elif kind == "delete":
            r = await stack.kommo.post(f"{base}/{cid}/delete")
            deleted.append(cid)
        elif kind == "restore":
            r = await stack.kommo.post(f"{base}/{deleted.pop(rng.randrange(len(deleted)))}/restore")
        elif kind == "duplicate":
            # merge-like: another contact's address is added to this one
            donors = [c for c in ids if live[c]["emails"] and c != cid]
            donor = rng.choice(donors)
            emails.append(rng.choice(list(live[donor]["emails"])))  # type: ignore[arg-type]
            r = await stack.kommo.patch(
                base, json=[{"id": cid, "custom_fields_values": _email_values(emails)}]
            )
        else:
            r = await stack.kommo.post(
                base,
                json=[
                    {
                        "name": f"Created {i}",
                        "custom_fields_values": _email_values([f"created{i}@example.net"]),
                    }
                ],
            )
        assert r.status_code in (200, 201), (kind, r.status_code, r.text)
        kinds[kind] += 1
    return kinds


@pytest.mark.timeout(300)  # above the sum of the phases' own deadlines, which say what they waited for
async def test_full_sync_then_random_edits_then_unsubscribes(stack: Stack) -> None:
    rng = random.Random(20261123)
    account = await connect_account(stack, contacts=600, seed=7)
    async with running_worker(stack.settings):
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        again = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert again.json()["run_id"] == run_id  # a second call while one runs returns the running one
        await wait_quiet(stack, account, within=90)  # the full sync of 600 contacts (three Kommo pages)
        run = (await stack.api.get(f"/sync/runs/{run_id}", headers=stack.admin_headers)).json()
        assert run["status"] == "done", run
        assert run["counters"]["fetched"] == 600
        await assert_mirror_exact(stack, account)

        kinds = await random_edits(stack, account, 200, rng)
        assert all(kinds.values()), kinds
        await wait_quiet(stack, account, within=90)  # 200 edits mirrored
        await assert_mirror_exact(stack, account)

        # Unsubscribes in Unisender come back to Kommo as a tag and are never undone.
        actual = await unisender_contacts(stack, account)
        chosen = rng.sample(sorted(actual), 5)
        for email in chosen:
            r = await stack.unisender.post(
                f"/_sandbox/accounts/{account.api_key}/contacts/{email}/unsubscribe", json={"list_id": None}
            )
            assert r.status_code == 200, r.text

        async def tagged() -> bool:
            live = await kommo_contacts(stack, account)
            holders = [c for c in live.values() if set(chosen) & {e.lower() for e in c["emails"]}]  # type: ignore[union-attr]
            return bool(holders) and all("unsubscribed" in c["tags"] for c in holders)  # type: ignore[operator]

        await wait_for(tagged, within=30, what="the five unsubscribes tagged in Kommo")
        live = await kommo_contacts(stack, account)
        for cid, c in live.items():
            if set(chosen) & {e.lower() for e in c["emails"]}:  # type: ignore[union-attr]
                r = await stack.kommo.patch(
                    f"/_sandbox/accounts/{account.subdomain}/contacts",
                    json=[{"id": cid, "name": f"After unsub {cid}"}],
                )
                assert r.status_code == 200
        await wait_quiet(stack, account)
        after = await unisender_contacts(stack, account)
        for email in chosen:
            assert after[email]["status"] == "unsubscribed", after[email]
        accounts = (
            await stack.api.get(f"/accounts/{account.account_id}", headers=stack.admin_headers)
        ).json()
        assert accounts["unisender"]["connected"] is True
