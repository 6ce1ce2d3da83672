"""Webhook token rotation (operator endpoint and ``contactsync rotate-token``): the old token is refused at once
(in the rotating process) or within the intake cache's TTL (elsewhere); Kommo and Unisender hold the new URLs
only."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.conftest import Stack
from tests.faults.support import worker_env
from tests.support.e2e import Account, connect_account

REPO = Path(__file__).resolve().parents[2]
BODY = (
    "account[id]={acc}&account[subdomain]=acme&contacts[update][0][id]=5&contacts[update][0][name]=Ann{n}"
    "&contacts[update][0][updated_at]={n}&contacts[update][0][last_modified]={n}"
)


async def _post(stack: Stack, account: Account, token: str, n: int) -> int:
    r = await stack.api.post(
        f"/webhooks/kommo/{account.account_id}",
        params={"token": token},
        content=BODY.format(acc=account.account_id, n=n).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return r.status_code


async def _hook_urls(stack: Stack, account: Account) -> tuple[list[str], list[str]]:
    """The webhook destinations Kommo holds and the hook URLs Unisender holds for the account."""
    kommo = (await stack.kommo.get(f"/_sandbox/accounts/{account.subdomain}/webhooks")).json()
    unisender = (await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/hooks")).json()["hooks"]
    return sorted(h["destination"] for h in kommo), sorted(h["hook_url"] for h in unisender)


def _urls(stack: Stack, account_id: int, token: str) -> tuple[list[str], list[str]]:
    public = stack.settings.public_url
    return (
        [f"{public}/webhooks/kommo/{account_id}?token={token}"],
        [f"{public}/webhooks/unisender/{account_id}?token={token}"],
    )


async def test_rotate_token_endpoint_refuses_the_old_token_at_once_and_moves_both_hooks(stack: Stack) -> None:
    account = await connect_account(stack)
    old = account.webhook_token
    assert await _hook_urls(stack, account) == _urls(stack, account.account_id, old)
    assert await _post(stack, account, old, 1) == 200  # the intake cache now holds the old hash

    path = f"/integration/{account.account_id}/rotate-token"
    assert (await stack.api.post(path)).status_code == 401
    assert (await stack.api.post(path, headers={"X-Auth-Token": "x"})).status_code == 401
    assert (
        await stack.api.post("/integration/999/rotate-token", headers=stack.admin_headers)
    ).status_code == 404
    r = await stack.api.post(path, headers=stack.admin_headers)
    assert r.status_code == 200, r.text
    out = r.json()
    new = parse_qs(urlsplit(out["webhook_url"]).query)["token"][0]
    assert new != old
    assert out == {
        "account_id": account.account_id,
        "webhook_url": _urls(stack, account.account_id, new)[0][0],
        "kommo_webhooks_registered": True,
        "unisender_hook_registered": True,
    }
    # At once in this process, although the old hash was cached a moment ago.
    assert await _post(stack, account, old, 2) == 401
    assert await _post(stack, account, new, 3) == 200
    assert await _hook_urls(stack, account) == _urls(stack, account.account_id, new)
    # Kommo's real deliveries now come with the new token and are accepted.
    await stack.kommo.delete("/_sandbox/deliveries")
    cid = (
        await stack.kommo.post(f"/_sandbox/accounts/{account.subdomain}/contacts", json=[{"name": "Bo"}])
    ).json()
    assert cid["_embedded"]["contacts"]
    await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 10})
    deliveries = (await stack.kommo.get("/_sandbox/deliveries")).json()
    assert [(d["destination"], d["status"]) for d in deliveries] == [(out["webhook_url"], 200)]
    view = (await stack.api.get(f"/accounts/{account.account_id}", headers=stack.admin_headers)).json()
    assert view["kommo"]["webhooks_registered"] is True
    assert view["unisender"]["hook_registered"] is True
    assert view["last_error"] is None


async def test_cli_rotate_token_takes_effect_in_other_processes_within_the_cache_ttl(
    stack: Stack, tmp_path: Path
) -> None:
    account = await connect_account(stack)
    old = account.webhook_token
    assert await _post(stack, account, old, 1) == 200
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "rotate-token", str(account.account_id)],
        env=worker_env(stack.settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    new = parse_qs(urlsplit(out["webhook_url"]).query)["token"][0]
    assert (out["kommo_webhooks_registered"], out["unisender_hook_registered"]) == (True, True)
    # The API process learns it from its cache expiring (5 s), not from the CLI: wait with a deadline.
    deadline = time.monotonic() + 8
    n = 2
    while await _post(stack, account, old, n) != 401:
        assert time.monotonic() < deadline, "the old token was still accepted 8 s after the rotation"
        n += 1
        await asyncio.sleep(0.2)
    assert await _post(stack, account, new, n + 1) == 200
    assert await _hook_urls(stack, account) == _urls(stack, account.account_id, new)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "rotate-token", "999"],
        env=worker_env(stack.settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Account 999 is not registered." in proc.stderr
